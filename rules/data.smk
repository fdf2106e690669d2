# Stage 1: data. simulate_demo | download -> standardize -> align_genes -> split -> ground_truth, zscores -> stage1_report


localrules:
    download,


rule simulate_demo:
    output:
        counts=f"{RESULTS}/{{dataset}}/raw/demo_counts.h5ad",
        universe=f"{RESULTS}/{{dataset}}/raw/universe.txt",
        gene_info=f"{RESULTS}/{{dataset}}/raw/annotations/Homo_sapiens.gene_info.gz",
        gene2go=f"{RESULTS}/{{dataset}}/raw/annotations/gene2go.gz",
        go_obo=f"{RESULTS}/{{dataset}}/raw/annotations/go-basic.obo",
        simulation=f"{RESULTS}/{{dataset}}/raw/simulation.json",
    params:
        seed=config["seed"],
        demo={k: v for k, v in config["demo"].items() if k != "model_params"},
    log:
        log_path("simulate_demo"),
    benchmark:
        bench_path("simulate_demo")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/simulate_demo.py"


rule download:
    output:
        f"{DOWNLOADS}/{{entry}}/{{file}}",
    params:
        entry=lambda wc: wc.entry,
        registry=repo_path(config["registry"]),
        user_datasets=USER_DATASETS,
        mirror=config["mirror"],
        lock_file=config["lock_file"],
        retries=config["download"]["retries"],
        backoff=config["download"]["backoff"],
        timeout=config["download"]["timeout"],
    log:
        f"{DOWNLOADS}/logs/{{entry}}/{{file}}.log",
    benchmark:
        f"{DOWNLOADS}/logs/{{entry}}/{{file}}.benchmark.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/download.py"


rule standardize:
    input:
        unpack(standardize_inputs),
    output:
        h5ad=stage1_intermediate("standardized.h5ad"),
        summary=stage1_path("standardize.json"),
    params:
        dataset=lambda wc: wc.dataset,
        registry=repo_path(config["registry"]),
        user_datasets=USER_DATASETS,
        input_scale=S1["input_scale"],
        target_sum=S1["target_sum"],
        duplicate_genes=S1["duplicate_genes"],
        duplicate_cells=S1["duplicate_cells"],
        chunk_size=S1["chunk_size"],
    resources:
        mem_mb=4000,
    log:
        log_path("standardize"),
    benchmark:
        bench_path("standardize")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/standardize.py"


rule align_genes:
    input:
        h5ad=stage1_path("standardized.h5ad"),
        universe=lambda wc: universe_path(wc.dataset) or [],
        gene_info=lambda wc: (
            gene_info_path(wc.dataset)
            if S1["universe"]["alias_rescue"] and universe_path(wc.dataset)
            else []
        ),
    output:
        h5ad=stage1_intermediate("aligned.h5ad"),
        summary=stage1_path("align.json"),
    params:
        universe=S1["universe"],
        universe_note=lambda wc: universe_note(wc.dataset),
        chunk_size=S1["chunk_size"],
    resources:
        mem_mb=4000,
    log:
        log_path("align_genes"),
    benchmark:
        bench_path("align_genes")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/align_genes.py"


rule split:
    input:
        h5ad=stage1_path("aligned.h5ad"),
        val_counts=lambda wc: val_counts_path() or [],
    output:
        train=stage1_path("train.h5ad"),
        val=stage1_path("val.h5ad"),
        split=stage1_path("split.json"),
    params:
        seed=config["seed"],
        split=S1["split"],
        chunk_size=S1["chunk_size"],
    resources:
        mem_mb=4000,
    log:
        log_path("split"),
    benchmark:
        bench_path("split")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/split.py"


rule ground_truth:
    input:
        val=stage1_path("val.h5ad"),
        split=stage1_path("split.json"),
    output:
        truth=stage1_path("truth.h5ad"),
        pseudobulk=stage1_path("pseudobulk.parquet"),
        genes=stage1_path("genes.txt"),
        pert_counts=stage1_path("pert_counts.csv"),
        template=stage1_path("template.csv"),
        record=stage1_path("ground_truth.json"),
    params:
        chunk_size=S1["chunk_size"],
    log:
        log_path("ground_truth"),
    benchmark:
        bench_path("ground_truth")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/ground_truth.py"


rule knowledge_genes:
    input:
        genes=stage1_path("genes.txt"),
        train=stage1_path("train.h5ad"),
        template=stage1_path("template.csv"),
        split=stage1_path("split.json"),  # train.h5ad's recorded sha256
    output:
        genes=stage1_path("knowledge_genes.txt"),
    log:
        log_path("knowledge_genes"),
    benchmark:
        bench_path("knowledge_genes")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/knowledge_genes.py"


rule zscores:
    input:
        train=stage1_path("train.h5ad"),
        split=stage1_path("split.json"),  # train.h5ad's recorded sha256
    output:
        h5ad=stage1_path("zscores.h5ad"),
        summary=stage1_path("zscores.json"),
    params:
        zscores=S1["zscores"],
        seed=config["seed"],
        chunk_size=S1["chunk_size"],
    log:
        log_path("zscores"),
    benchmark:
        bench_path("zscores")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/zscores.py"


rule stage1_report:
    input:
        zscores=stage1_path("zscores.json"),
        zscores_h5ad=stage1_path("zscores.h5ad"),
        standardize=stage1_path("standardize.json"),
        align=stage1_path("align.json"),
        split=stage1_path("split.json"),
        train=stage1_path("train.h5ad"),
        val=stage1_path("val.h5ad"),
        truth=stage1_path("truth.h5ad"),
        pseudobulk=stage1_path("pseudobulk.parquet"),
        genes=stage1_path("genes.txt"),
        pert_counts=stage1_path("pert_counts.csv"),
        template=stage1_path("template.csv"),
        ground_truth=stage1_path("ground_truth.json"),
    output:
        json=report(stage1_path("stage1_report.json"), caption="../report/stage1.rst", category="Stage 1"),
        txt=report(stage1_path("stage1_report.txt"), caption="../report/stage1.rst", category="Stage 1"),
    params:
        dataset=lambda wc: wc.dataset,
        chunk_size=S1["chunk_size"],
    log:
        log_path("stage1_report"),
    benchmark:
        bench_path("stage1_report")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/stage1_report.py"
