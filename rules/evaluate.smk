# Stage 3: cell-eval prep/run/score against the cell-mean baseline, the local scorer, leaderboard, report.


wildcard_constraints:
    model="|".join(ROWS) if ROWS else "NO_MODEL",


# Quick summaries run on the submit host under a cluster profile.
localrules:
    leaderboard,
    report,


rule celleval_baseline:
    input:
        train=stage1_path("train.h5ad"),
        template=stage1_path("template.csv"),
        truth=stage1_path("truth.h5ad"),
        records=[stage1_path("split.json"), stage1_path("ground_truth.json")],
    output:
        baseline=f"{RESULTS}/{{dataset}}/stage3/_baseline/baseline.h5ad",
        agg=f"{RESULTS}/{{dataset}}/stage3/_baseline/agg_results.csv",
        results=f"{RESULTS}/{{dataset}}/stage3/_baseline/results.csv",
        run_info=f"{RESULTS}/{{dataset}}/stage3/_baseline/run.json",
    params:
        profile=CELL_EVAL_PROFILE,
        engine=config["evaluation"]["run_engine"],
        chunk_size=S1["chunk_size"],
        seed=config["seed"],  # the cell_mean predict rule's seed: the same control draws
    threads: config["evaluation"]["threads"]
    log:
        log_path("celleval_baseline"),
    benchmark:
        bench_path("celleval_baseline")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/celleval_baseline.py"


rule prep:
    input:
        predictions=stage2_path("predictions.h5ad"),
        genes=stage1_path("genes.txt"),
        truth=stage1_path("truth.h5ad"),
        template=stage1_path("template.csv"),
        records=[stage2_path("predict.json"), stage1_path("ground_truth.json")],
    output:
        vcc=stage3_path("{model}.vcc"),
        summary=stage3_path("prep.json"),
    params:
        engine=config["evaluation"]["prep_engine"],
        chunk_size=S1["chunk_size"],
    log:
        f"{RESULTS}/{{dataset}}/logs/prep_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/prep_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/prep.py"


rule celleval_run:
    input:
        vcc=stage3_path("{model}.vcc"),
        predictions=stage2_path("predictions.h5ad"),
        truth=stage1_path("truth.h5ad"),
        records=[stage2_path("predict.json"), stage1_path("ground_truth.json")],
    output:
        results=stage3_path("results.csv"),
        agg=stage3_path("agg_results.csv"),
        pred_de=stage3_path("pred_de.csv"),
        real_de=stage3_path("real_de.csv"),
        run_info=stage3_path("run.json"),
    params:
        profile=CELL_EVAL_PROFILE,
        engine=config["evaluation"]["run_engine"],
    threads: config["evaluation"]["threads"]
    log:
        f"{RESULTS}/{{dataset}}/logs/celleval_run_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/celleval_run_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/celleval_run.py"


rule score:
    input:
        agg=stage3_path("agg_results.csv"),
        results=stage3_path("results.csv"),
        baseline=f"{RESULTS}/{{dataset}}/stage3/_baseline/agg_results.csv",
    output:
        score=report(stage3_path("score.json"), caption="../report/score.rst", category="Stage 3"),
    log:
        f"{RESULTS}/{{dataset}}/logs/score_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/score_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/score.py"


rule local_metrics:
    input:
        predictions=stage2_path("predictions.h5ad"),
        truth=stage1_path("truth.h5ad"),
        records=[stage2_path("predict.json"), stage1_path("ground_truth.json")],
        results=stage3_path("results.csv"),
        run_info=stage3_path("run.json"),
    output:
        metrics=stage3_path("local_metrics.json"),
        table=stage3_path("local_results.csv"),
        consistency=stage3_path("consistency.json"),
    log:
        f"{RESULTS}/{{dataset}}/logs/local_metrics_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/local_metrics_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/local_metrics.py"


rule vcc2026_bundle:
    input:
        val=stage1_path("val.h5ad"),
        truth=stage1_path("truth.h5ad"),
        records=[stage1_path("split.json"), stage1_path("ground_truth.json")],
    output:
        info=f"{RESULTS}/{{dataset}}/stage3/_vcc2026/bundle.json",
        files=directory(f"{RESULTS}/{{dataset}}/stage3/_vcc2026/files"),
    params:
        required=EVAL_PROFILE == "vcc2026",  # `both`: data without counts (or too small to scale) skip, and say why
        seed=config["seed"],
        chunk_size=S1["chunk_size"],
    log:
        log_path("vcc2026_bundle"),
    benchmark:
        bench_path("vcc2026_bundle")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/vcc2026_bundle.py"


rule vcc2026_score:
    input:
        predictions=stage2_path("predictions.h5ad"),
        train=stage1_path("train.h5ad"),
        info=f"{RESULTS}/{{dataset}}/stage3/_vcc2026/bundle.json",
        files=f"{RESULTS}/{{dataset}}/stage3/_vcc2026/files",
        records=[stage2_path("predict.json")],
    output:
        score=stage3_path("vcc2026.json"),
        agg=stage3_path("vcc2026_agg.csv"),
        meta=stage3_path("vcc2026_run_meta.json"),
    params:
        seed=config["seed"],
        chunk_size=S1["chunk_size"],
    log:
        f"{RESULTS}/{{dataset}}/logs/vcc2026_score_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/vcc2026_score_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/vcc2026_score.py"


rule vcc2026_prep:
    input:
        predictions=stage2_path("predictions.h5ad"),
        train=stage1_path("train.h5ad"),
        template=stage1_path("template.csv"),
        genes=stage1_path("genes.txt"),
        records=[stage2_path("predict.json"), stage1_path("ground_truth.json")],
    output:
        vcc=stage3_path("{model}_2026.vcc"),
        summary=stage3_path("prep_2026.json"),
        h5ad=temp(stage3_path("submission_2026.h5ad")),
        perts=stage3_path("pert_counts_2026.csv"),
    params:
        contexts=VCC2026_CONTEXTS,
        seed=config["seed"],
        chunk_size=S1["chunk_size"],
    log:
        f"{RESULTS}/{{dataset}}/logs/vcc2026_prep_{{model}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/vcc2026_prep_{{model}}.tsv"
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/vcc2026_prep.py"


rule ceiling:
    input:
        truth=stage1_path("truth.h5ad"),
        baseline=f"{RESULTS}/{{dataset}}/stage3/_baseline/baseline.h5ad",
    output:
        ceiling=f"{RESULTS}/{{dataset}}/stage3/_ceiling/ceiling.json",
    params:
        seed=config["seed"],
    log:
        log_path("ceiling"),
    benchmark:
        bench_path("ceiling")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/ceiling.py"


rule leaderboard:
    input:
        scores=expand(stage3_path("score.json", model="{m}"), m=ROWS, allow_missing=True),
        logs=expand(stage2_path("train_log.json", model="{m}"), m=[trained_model(r) for r in ROWS],
                    allow_missing=True),
        local=expand(stage3_path("local_metrics.json", model="{m}"), m=ROWS, allow_missing=True),
        predicts=expand(stage2_path("predict.json", model="{m}"), m=ROWS, allow_missing=True),
        results=expand(stage3_path("results.csv", model="{m}"), m=ROWS, allow_missing=True),
        baseline_results=f"{RESULTS}/{{dataset}}/stage3/_baseline/results.csv",
        ceiling=f"{RESULTS}/{{dataset}}/stage3/_ceiling/ceiling.json",
        real_de=stage3_path("real_de.csv", model=ROWS[0]) if ROWS else [],
        vcc2026=expand(stage3_path("vcc2026.json", model="{m}"), m=ROWS if VCC2026 else [], allow_missing=True),
        vcc2026_bundle=[f"{RESULTS}/{{dataset}}/stage3/_vcc2026/bundle.json"] if VCC2026 else [],
    output:
        csv=report(f"{RESULTS}/{{dataset}}/leaderboard.csv", caption="../report/leaderboard.rst", category="Stage 3"),
        md=f"{RESULTS}/{{dataset}}/leaderboard.md",
        standing=f"{RESULTS}/{{dataset}}/standing.json",
    params:
        models=ROWS,
        baselines=[r for r in ROWS if model_class(trained_model(r)).baseline],
        seed=config["seed"],
    log:
        log_path("leaderboard"),
    benchmark:
        bench_path("leaderboard")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/leaderboard.py"


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(f"{RESULTS}/{{dataset}}/report.html", caption="../report/report.rst", category="Report"),
    params:
        models=MODEL_NAMES,
        dataset=lambda wc: wc.dataset,
        task=TASK.name,
    log:
        log_path("report"),
    benchmark:
        bench_path("report")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/report.py"
