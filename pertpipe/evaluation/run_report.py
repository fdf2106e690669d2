"""A run's one page, ``results/{dataset}/report.html``, whatever its task: the task's own report (cells,
signatures, labels or spatial) with links to the files the run wrote. The report rules call :func:`write_run_report`;
each task's page is written by the report writer every task uses (:mod:`pertpipe.report_page`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pertpipe import report_page
from pertpipe.io import package_versions, read_json

RUN_FILES = (  # what a report links, relative to results/{dataset}/ (only files that exist are linked)
    "*.csv", "*.md", "*.png", "stage1/*report.txt", "stage1/*split.json", "stage2/*/train_log.json",
    "stage2/*/predict.json", "stage3/*/*.json", "stage3/*/*.csv", "spatial/*.json", "spatial/*.txt",
    "spatial/*/*.json", "spatial/evaluation/*.csv", "spatial/figures/*.png")


def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The run's files a report links (:data:`RUN_FILES`), each once, in that order."""
    run_dir, seen, out = Path(run_dir), set(), []
    for pattern in RUN_FILES:
        for p in sorted(run_dir.glob(pattern)):
            if p.is_file() and p not in seen:
                seen.add(p)
                out.append(p)
    return out


def links(out_html: str | os.PathLike) -> str:
    """The links section of the report at ``out_html``: every run file beside it (:func:`run_files`)."""
    return report_page.artifacts(out_html, run_files(Path(out_html).parent))


def write_run_report(task: str, *, dataset: str, inputs: dict[str, Any], models: list[str],
                     out_html: str | os.PathLike) -> str:
    """Read the report's inputs for ``task`` (the paths ``report_inputs`` in rules/common.smk gives, lists per model in
    ``models`` order), render the task's page and write it atomically to ``out_html``. Returns the page."""
    logs = {m: read_json(p) for m, p in zip(models, inputs.get("logs", []))}
    if task == "labels":
        from pertpipe.evaluation.labels import html_report

        text = html_report(dataset=dataset, board=pd.read_csv(inputs["leaderboard"]), figure_png=inputs["figure"],
                           stage1=read_json(inputs["stage1"]), train_logs=logs, versions=package_versions(),
                           links=links(out_html))
    elif task == "signatures":
        from pertpipe.evaluation.signatures import html_report

        text = html_report(dataset=dataset, board=pd.read_csv(inputs["leaderboard"]),
                           summaries={m: read_json(p) for m, p in zip(models, inputs["metrics"])},
                           tables={m: pd.read_csv(p) for m, p in zip(models, inputs["tables"])},
                           stage1=read_json(inputs["stage1"]), train_logs=logs, versions=package_versions(),
                           links=links(out_html))
    elif task == "cells":
        from pertpipe.evaluation import celleval
        from pertpipe.evaluation.report import html_report, read_bulk

        text = html_report(
            dataset=dataset, board=pd.read_csv(inputs["leaderboard"]), stage1=read_json(inputs["stage1"]),
            consistency={m: read_json(p) for m, p in zip(models, inputs["consistency"])}, train_logs=logs,
            pred_bulks={m: read_bulk(p) for m, p in zip(models, inputs["predictions"])},
            truth_bulk=read_bulk(inputs["truth"]), versions={**package_versions(), **celleval.versions()},
            attention={m: pd.read_parquet(p) for m, p in zip(models, inputs["attention"])},
            standing=read_json(inputs["standing"]), links=links(out_html))
    elif task == "spatial":
        from pertpipe.spatial.report import render_html

        text = render_html(read_json(inputs["review"]), links=links(out_html))
    else:
        from pertpipe.tasks import get_task

        get_task(task)  # an unknown task: its error names the known ones
        raise ValueError(f"task '{task}' has no report")
    report_page.write(out_html, text)
    return text
