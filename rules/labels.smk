# The labels task (PerturbQA): stage 1 (labels_standardize -> labels_split -> labels_report) and stage 3
# (score_labels per model -> label_leaderboard). Training and prediction are the shared rules of models.smk.


localrules:
    label_leaderboard,


rule labels_standardize:
    input:
        unpack(label_source_files),
    output:
        h5ad=stage1_path("labels.h5ad"),
        summary=stage1_path("labels_standardize.json"),
        genes=stage1_path("label_genes.txt"),
    params:
        dataset=lambda wc: wc.dataset,
        lines=lambda wc: list(label_lines(wc.dataset)),
        provenance=lambda wc: label_provenance(wc.dataset),
        max_unknown_fraction=S1["labels"]["max_unknown_fraction"],
    log:
        log_path("labels_standardize"),
    benchmark:
        bench_path("labels_standardize")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_standardize.py"


rule labels_split:
    input:
        h5ad=stage1_path("labels.h5ad"),
    output:
        train=stage1_path("labels_train.h5ad"),
        test=stage1_path("labels_test.h5ad"),
        template=stage1_path("labels_template.csv"),
        split=stage1_path("labels_split.json"),
    params:
        seed=config["seed"],
        split=S1["split"],
    log:
        log_path("labels_split"),
    benchmark:
        bench_path("labels_split")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_split.py"


rule labels_report:
    input:
        standardize=stage1_path("labels_standardize.json"),
        split=stage1_path("labels_split.json"),
    output:
        json=report(stage1_path("labels_report.json"), caption="../report/labels.rst", category="Stage 1"),
        txt=report(stage1_path("labels_report.txt"), caption="../report/labels.rst", category="Stage 1"),
    log:
        log_path("labels_report"),
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/labels_report.py"


rule score_labels:
    input:
        predictions=stage2_path("predictions.h5ad"),
        truth=stage1_path("labels_test.h5ad"),
        records=[stage2_path("predict.json"), stage1_path("labels_split.json")],
    output:
        metrics=stage3_path("label_metrics.json"),
        table=stage3_path("label_results.csv"),
    log:
        f"{RESULTS}/{{dataset}}/logs/score_labels_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/score_labels_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/score_labels.py"


rule label_leaderboard:
    input:
        metrics=expand(stage3_path("label_metrics.json", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        tables=expand(stage3_path("label_results.csv", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        train_logs=expand(stage2_path("train_log.json", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        standardize=stage1_path("labels_standardize.json"),
    output:
        csv=report(f"{RESULTS}/{{dataset}}/label_leaderboard.csv", caption="../report/labels.rst",
                   category="Stage 3"),
        md=f"{RESULTS}/{{dataset}}/label_leaderboard.md",
        png=report(f"{RESULTS}/{{dataset}}/label_leaderboard.png", caption="../report/labels.rst",
                   category="Stage 3"),
    params:
        models=MODEL_NAMES,
        baselines=[m for m in MODEL_NAMES if model_class(m).baseline],
        seed=config["seed"],
    log:
        log_path("label_leaderboard"),
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/label_leaderboard.py"
