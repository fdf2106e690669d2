"""``spatial``: a spatial slide paired with a scRNA-seq reference (raw counts, ``obsm["spatial"]``, reference
``obs["cell_type"]``); LR genes are imputed; SpatialBenchmarking's per-gene metrics; ``spatial/spatial_report.json``
and ``report.html``. Its stages are the spatial rules' own (rules/spatial.smk, :mod:`pertpipe.spatial.stages`)."""

from __future__ import annotations

import os
from typing import Any

from pertpipe.core.layout import RunLayout
from pertpipe.data.contracts import CONTRACTS
from pertpipe.errors import ConfigError
from pertpipe.spatial.report import SECTION
from pertpipe.tasks.base import Task


class SpatialTask(Task):
    def report_inputs(self, layout: RunLayout, dataset: str, models: list[str]) -> dict[str, Any]:
        return {"review": layout.spatial("spatial_report.json", dataset)}

    def write_predictions(self, model: Any, template: Any, train: str | os.PathLike, dest: str | os.PathLike, *,
                          seed: int, uns: dict[str, Any] | None, chunk_size: int) -> tuple[dict[str, Any], Any]:
        raise ConfigError(f"{dest}: the spatial task has no predict rule; its imputations are written by the spatial "
                          "rules. Fix: run the spatial target (snakemake spatial)")

    def render_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str], links: str) -> str:
        from pertpipe.io import read_json
        from pertpipe.spatial.report import render_html

        return render_html(read_json(inputs["review"]), links=links)


SPATIAL = SpatialTask("spatial", "ligand-receptor imputation of a spatial slide from paired scRNA-seq",
                      CONTRACTS["counts"], ("kfold_genes",), ("spatial/spatial_report.json", "report.html"), SECTION)
