# Stage 3 for signature datasets (L1000 z-scores): the signature metrics instead of cell-eval, and their leaderboard.


localrules:
    signature_leaderboard,


rule score_signatures:
    input:
        predictions=stage2_path("predictions.h5ad"),
        truth=stage1_path("truth.h5ad"),
        records=[stage2_path("predict.json"), stage1_path("ground_truth.json")],
    output:
        metrics=report(stage3_path("signature_metrics.json"), caption="../report/signatures.rst", category="Stage 3"),
        table=stage3_path("signature_results.csv"),
    log:
        f"{RESULTS}/{{dataset}}/logs/score_signatures_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/score_signatures_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/score_signatures.py"


rule signature_leaderboard:
    input:
        metrics=expand(stage3_path("signature_metrics.json", model="{m}"), m=MODEL_NAMES, allow_missing=True),
        tables=expand(stage3_path("signature_results.csv", model="{m}"), m=MODEL_NAMES, allow_missing=True),
    output:
        csv=report(f"{RESULTS}/{{dataset}}/signature_leaderboard.csv", caption="../report/signatures.rst",
                   category="Stage 3"),
        md=f"{RESULTS}/{{dataset}}/signature_leaderboard.md",
    params:
        models=MODEL_NAMES,
        baselines=[m for m in MODEL_NAMES if model_class(m).baseline],
        seed=config["seed"],
    log:
        log_path("signature_leaderboard"),
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/signature_leaderboard.py"
