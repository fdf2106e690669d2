# Spatial branch (`snakemake spatial`): LR-focused imputation of spatial data from paired scRNA-seq.
# spatial_inputs -> lr_genes -> spatial_priors -> knn_labels -> train_lrimpute -> impute
#   -> spatial_evaluate (k-fold held-out LR genes, baselines, ablations), communication -> spatial_report
# Artifacts under results/{spatial_dataset}/spatial/. Logic: pertpipe.spatial (stages.py).

rule spatial:
    input:
        expand(spatial_path("spatial_report.json", "{sd}"), sd=SPATIAL["datasets"]),
        expand(f"{RESULTS}/{{sd}}/report.html", sd=SPATIAL["datasets"]),


rule spatial_inputs:
    input:
        unpack(spatial_input_files),
    output:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        summary=spatial_path("inputs.json"),
    params:
        entry=lambda wc: SPATIAL_REGISTRY.get(wc.spatial_dataset, "spatial"),
    log:
        spatial_log("inputs"),
    benchmark:
        spatial_bench("inputs")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_inputs.py"


rule lr_genes:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        resource=lr_resource_file,
    output:
        spatial_path("lr_genes.json"),
    params:
        resource=SPATIAL["lr_resource"],
        species=lambda wc: spatial_species(wc.spatial_dataset),
        lr=SPATIAL["lr"],
    log:
        spatial_log("lr_genes"),
    benchmark:
        spatial_bench("lr_genes")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_lr_genes.py"


rule spatial_priors:
    input:
        unpack(prior_files),
        lr_genes=spatial_path("lr_genes.json"),
        spatial=spatial_path("inputs/spatial.h5ad"),
    output:
        npz=spatial_path("priors.npz"),
        summary=spatial_path("priors.json"),
    params:
        priors=SPATIAL["priors"],
    log:
        spatial_log("priors"),
    benchmark:
        spatial_bench("priors")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_priors.py"


rule knn_labels:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        lr_genes=spatial_path("lr_genes.json"),
        priors=spatial_path("priors.npz"),
    output:
        h5ad=spatial_path("knn_labels.h5ad"),
        summary=spatial_path("knn_labels.json"),
    params:
        model=SPATIAL["model"],
        seed=config["seed"],
        checkpoint=spatial_path("knn_labels.checkpoint.pt"),
    resources:
        gpu=spatial_gpu(),
    log:
        spatial_log("knn_labels"),
    benchmark:
        spatial_bench("knn_labels")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_knn_labels.py"


rule train_lrimpute:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        knn=spatial_path("knn_labels.h5ad"),
        priors=spatial_path("priors.npz"),
    output:
        model=spatial_path("lrimpute/model.pt"),
        summary=spatial_path("lrimpute/train.json"),
    params:
        model=SPATIAL["model"],
        seed=config["seed"],
        checkpoint=spatial_path("lrimpute/checkpoint.pt"),
    resources:
        gpu=spatial_gpu(),
    log:
        spatial_log("train_lrimpute"),
    benchmark:
        spatial_bench("train_lrimpute")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_train.py"


rule impute:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        knn=spatial_path("knn_labels.h5ad"),
        model=spatial_path("lrimpute/model.pt"),
    output:
        spatial_path("imputed.h5ad"),
    log:
        spatial_log("impute"),
    benchmark:
        spatial_bench("impute")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_impute.py"


rule spatial_evaluate:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        lr_genes=spatial_path("lr_genes.json"),
        priors=spatial_path("priors.npz"),
    output:
        per_gene=spatial_path("evaluation/per_gene.csv"),
        summary=spatial_path("evaluation/summary.csv"),
        json=spatial_path("evaluation/evaluation.json"),
        heldout=spatial_path("evaluation/heldout.h5ad"),
    params:
        model=SPATIAL["model"],
        evaluate=SPATIAL["evaluate"],
        seed=config["seed"],
    threads: 2
    log:
        spatial_log("evaluate"),
    benchmark:
        spatial_bench("evaluate")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_evaluate.py"


rule communication:
    input:
        spatial=spatial_path("inputs/spatial.h5ad"),
        scrna=spatial_path("inputs/scrna.h5ad"),
        lr_genes=spatial_path("lr_genes.json"),
        knn=spatial_path("knn_labels.h5ad"),
        imputed=spatial_path("imputed.h5ad"),
    output:
        json=spatial_path("communication.json"),
        csv=spatial_path("communication.csv"),
    params:
        neighbors=SPATIAL["neighbors"],
    log:
        spatial_log("communication"),
    benchmark:
        spatial_bench("communication")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_communication.py"


rule spatial_report:
    input:
        inputs_json=spatial_path("inputs.json"),
        lr_genes=spatial_path("lr_genes.json"),
        priors_json=spatial_path("priors.json"),
        knn_json=spatial_path("knn_labels.json"),
        train_json=spatial_path("lrimpute/train.json"),
        imputed=spatial_path("imputed.h5ad"),
        evaluation=spatial_path("evaluation/evaluation.json"),
        per_gene=spatial_path("evaluation/per_gene.csv"),
        heldout=spatial_path("evaluation/heldout.h5ad"),
        communication=spatial_path("communication.json"),
    output:
        json=spatial_path("spatial_report.json"),
        txt=report(spatial_path("spatial_report.txt"), caption="../report/spatial.rst", category="Spatial"),
        html=report(f"{RESULTS}/{{spatial_dataset}}/report.html", caption="../report/spatial.rst", category="Spatial"),
        maps=report(spatial_path("figures/maps.png"), caption="../report/spatial.rst", category="Spatial"),
        metrics=report(spatial_path("figures/metrics.png"), caption="../report/spatial.rst", category="Spatial"),
    params:
        n_genes=SPATIAL["report_genes"],
    log:
        spatial_log("report"),
    benchmark:
        spatial_bench("report")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/spatial_report.py"
