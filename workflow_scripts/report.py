"""Rule report: the run's self-contained HTML report, for its task (cells: leaderboard, plots, consistency, stage-1
summary; labels: the label leaderboard beside the published rows, what each model chose, stage 1)."""
import pandas as pd

from pertpipe.io import package_versions, read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "report") as log:
    models = list(sm.params.models)
    logs = {m: read_json(p) for m, p in zip(models, sm.input.logs)}
    if sm.params.task == "labels":
        from pertpipe.evaluation.labels import html_report
        from pertpipe.evaluation.report import write_report

        text = html_report(dataset=sm.params.dataset, board=pd.read_csv(sm.input.leaderboard),
                           figure_png=sm.input.figure, stage1=read_json(sm.input.stage1), train_logs=logs,
                           versions=package_versions())
    else:
        from pertpipe.evaluation import celleval
        from pertpipe.evaluation.report import html_report, read_bulk, write_report

        text = html_report(
            dataset=sm.params.dataset, board=pd.read_csv(sm.input.leaderboard), stage1=read_json(sm.input.stage1),
            consistency={m: read_json(p) for m, p in zip(models, sm.input.consistency)}, train_logs=logs,
            pred_bulks={m: read_bulk(p) for m, p in zip(models, sm.input.predictions)},
            truth_bulk=read_bulk(sm.input.truth), versions={**package_versions(), **celleval.versions()},
            attention={m: pd.read_parquet(p) for m, p in zip(models, sm.input.attention)},
            standing=read_json(sm.input.standing))
    write_report(sm.output.html, text)
    log.info("report written (%d bytes)", len(text))
