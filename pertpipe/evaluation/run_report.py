"""The files a run's report links, whatever its task: :func:`run_files` under ``results/{dataset}/`` and the links
section :func:`links` renders (each task's page, :meth:`pertpipe.tasks.base.Task.write_report`, ends with it)."""

from __future__ import annotations

import os
from pathlib import Path

from pertpipe import report_page

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
