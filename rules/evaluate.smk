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


# One job per batch of rows (evaluation.rows_per_job) and scorer: cell-eval (prep, run) and the local scorer.
for _k, _rows in enumerate(ROW_BATCHES):

    rule:
        name:
            f"celleval_rows_{_k}"
        input:
            predictions=[stage2_path("predictions.h5ad", model=m) for m in _rows],
            genes=stage1_path("genes.txt"),
            truth=stage1_path("truth.h5ad"),
            template=stage1_path("template.csv"),
            records=[stage2_path("predict.json", model=m) for m in _rows] + [stage1_path("ground_truth.json")],
        output:
            vcc=row_files("{m}.vcc", _rows),
            prep=row_files("prep.json", _rows),
            **({} if SUBMISSION else dict(
                results=row_files("results.csv", _rows),
                agg=row_files("agg_results.csv", _rows),
                pred_de=row_files("pred_de.csv", _rows),
                real_de=row_files("real_de.csv", _rows),
                run_info=row_files("run.json", _rows),
                local_metrics=row_files("local_metrics.json", _rows),
                local_table=row_files("local_results.csv", _rows),
                consistency=row_files("consistency.json", _rows),
            )),
        params:
            rows=_rows,
            score=not SUBMISSION,
            profile=CELL_EVAL_PROFILE,
            run_engine=config["evaluation"]["run_engine"],
            prep_engine=config["evaluation"]["prep_engine"],
            chunk_size=S1["chunk_size"],
        threads: job_threads(config["evaluation"]["threads"])
        resources:
            mem_mb=16000,
            runtime=240,
        log:
            log_path(f"celleval_rows_{_k}"),
        benchmark:
            bench_path(f"celleval_rows_{_k}")
        conda:
            "../envs/pertpipe.yaml"
        script:
            "../workflow_scripts/celleval_rows.py"


rule score:
    # every row against the baseline in one job (cheap; the baseline row's aggregate comes from its batch)
    input:
        aggs=row_files("agg_results.csv", ROWS),
        results=row_files("results.csv", ROWS),
        baseline=baseline_file("agg_results.csv"),
    output:
        scores=[report(p, caption="../report/score.rst", category="Stage 3") for p in row_files("score.json", ROWS)],
    params:
        rows=ROWS,
    log:
        log_path("score"),
    benchmark:
        bench_path("score")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/score.py"


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
        cache=config["evaluation"]["cache_dir"],
        chunk_size=S1["chunk_size"],
    log:
        log_path("vcc2026_bundle"),
    benchmark:
        bench_path("vcc2026_bundle")
    conda:
        "../envs/pertpipe.yaml"
    script:
        "../workflow_scripts/vcc2026_bundle.py"


for _k, _rows in enumerate(ROW_BATCHES if VCC2026 else []):

    rule:
        name:
            f"vcc2026_rows_{_k}"
        input:
            predictions=[stage2_path("predictions.h5ad", model=m) for m in _rows],
            train=stage1_path("train.h5ad"),
            info=f"{RESULTS}/{{dataset}}/stage3/_vcc2026/bundle.json",
            files=f"{RESULTS}/{{dataset}}/stage3/_vcc2026/files",
            records=[stage2_path("predict.json", model=m) for m in _rows],
        output:
            score=row_files("vcc2026.json", _rows),
            agg=row_files("vcc2026_agg.csv", _rows),
            meta=row_files("vcc2026_run_meta.json", _rows),
        params:
            rows=_rows,
            seed=config["seed"],
            chunk_size=S1["chunk_size"],
        log:
            log_path(f"vcc2026_rows_{_k}"),
        benchmark:
            bench_path(f"vcc2026_rows_{_k}")
        conda:
            "../envs/pertpipe.yaml"
        script:
            "../workflow_scripts/vcc2026_rows.py"


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
        baseline=baseline_file("baseline.h5ad"),
    output:
        ceiling=f"{RESULTS}/{{dataset}}/stage3/_ceiling/ceiling.json",
    params:
        seed=config["seed"],
        cache=config["evaluation"]["cache_dir"],
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
        baseline_results=baseline_file("results.csv"),
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
