"""Rule report: the run's self-contained HTML report, for its task (cells: leaderboard, plots, consistency, stage-1
summary; signatures: the signature leaderboard, per-signature and per-context figures; labels: the label leaderboard
beside the published rows, what each model chose, stage 1), with links to the run's files."""
from pathlib import Path

import pandas as pd

from pertpipe import report_page
from pertpipe.io import package_versions, read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "report") as log:
    models = list(sm.params.models)
    logs = {m: read_json(p) for m, p in zip(models, sm.input.logs)}
    run_dir = Path(sm.output.html).parent
    files = sorted(p for p in run_dir.glob("*") if p.suffix in (".csv", ".md", ".png")) + sorted(
        p for pat in ("stage1/*report.txt", "stage1/*split.json", "stage2/*/train_log.json", "stage2/*/predict.json",
                      "stage3/*/*.json", "stage3/*/*.csv") for p in run_dir.glob(pat))
    links = report_page.artifacts(sm.output.html, files)
    if sm.params.task == "labels":
        from pertpipe.evaluation.labels import html_report

        text = html_report(dataset=sm.params.dataset, board=pd.read_csv(sm.input.leaderboard),
                           figure_png=sm.input.figure, stage1=read_json(sm.input.stage1), train_logs=logs,
                           versions=package_versions(), links=links)
    elif sm.params.task == "signatures":
        from pertpipe.evaluation.signatures import html_report

        text = html_report(dataset=sm.params.dataset, board=pd.read_csv(sm.input.leaderboard),
                           summaries={m: read_json(p) for m, p in zip(models, sm.input.metrics)},
                           tables={m: pd.read_csv(p) for m, p in zip(models, sm.input.tables)},
                           stage1=read_json(sm.input.stage1), train_logs=logs, versions=package_versions(),
                           links=links)
    else:
        from pertpipe.evaluation import celleval
        from pertpipe.evaluation.report import html_report, read_bulk

        text = html_report(
            dataset=sm.params.dataset, board=pd.read_csv(sm.input.leaderboard), stage1=read_json(sm.input.stage1),
            consistency={m: read_json(p) for m, p in zip(models, sm.input.consistency)}, train_logs=logs,
            pred_bulks={m: read_bulk(p) for m, p in zip(models, sm.input.predictions)},
            truth_bulk=read_bulk(sm.input.truth), versions={**package_versions(), **celleval.versions()},
            attention={m: pd.read_parquet(p) for m, p in zip(models, sm.input.attention)},
            standing=read_json(sm.input.standing), links=links)
    report_page.write(sm.output.html, text)
    log.info("report written (%d bytes)", len(text))
