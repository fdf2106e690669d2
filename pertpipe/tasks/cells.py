"""``cells``: single cells, X = log1p of normalised counts (raw counts in ``layers["counts"]`` where known); models
predict cells from drawn training controls; cell-eval's metrics (and cell-eval2's vcc2026 preset beside them);
``leaderboard.{csv,md}`` and ``report.html``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pertpipe.core.layout import RunLayout
from pertpipe.data.contracts import CONTRACTS
from pertpipe.evaluation.cells import SECTION
from pertpipe.tasks.base import Task, train_logs


class CellsTask(Task):
    predict_files: ClassVar[dict[str, str]] = {"template": "template.csv", "ground_truth": "ground_truth.json"}
    scores_raw_rows: ClassVar[bool] = True
    scores_in_batches: ClassVar[bool] = True
    scores_vcc2026: ClassVar[bool] = True

    def report_inputs(self, layout: RunLayout, dataset: str, models: list[str]) -> dict[str, Any]:
        """Leaderboard, standing, stage-1 report, truth and every model's predictions, logs, consistency and
        attention."""
        def per_model(path, name):
            return [path(name, dataset=dataset, model=m) for m in models]

        return {"leaderboard": layout.top("leaderboard.csv", dataset), "standing": layout.top("standing.json", dataset),
                "stage1": layout.stage1("stage1_report.json", dataset), "truth": layout.stage1("truth.h5ad", dataset),
                "predictions": per_model(layout.stage2, "predictions.h5ad"),
                "logs": per_model(layout.stage2, "train_log.json"),
                "consistency": per_model(layout.stage3, "consistency.json"),
                "attention": per_model(layout.stage2, "attention.parquet")}

    def write_predictions(self, model: Any, template: Any, train: str | os.PathLike, dest: str | os.PathLike, *,
                          seed: int, uns: dict[str, Any] | None, chunk_size: int) -> tuple[dict[str, Any], Any]:
        from pertpipe.models.predict import attention_table, write_predictions

        summary = write_predictions(model, template, train, dest, seed=model.seed, uns=uns, chunk_size=chunk_size)
        return summary, attention_table(model, template, train, seed=seed)

    def render_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str], links: str) -> str:
        import pandas as pd

        from pertpipe.evaluation import celleval
        from pertpipe.evaluation.cells import html_report, read_bulk
        from pertpipe.io import package_versions, read_json

        return html_report(
            dataset=dataset, board=pd.read_csv(inputs["leaderboard"]), stage1=read_json(inputs["stage1"]),
            consistency={m: read_json(p) for m, p in zip(models, inputs["consistency"])},
            train_logs=train_logs(inputs, models),
            pred_bulks={m: read_bulk(p) for m, p in zip(models, inputs["predictions"])},
            truth_bulk=read_bulk(inputs["truth"]), versions={**package_versions(), **celleval.versions()},
            attention={m: pd.read_parquet(p) for m, p in zip(models, inputs["attention"])},
            standing=read_json(inputs["standing"]), links=links)


CELLS = CellsTask("cells", "single-cell perturbation responses", CONTRACTS["log1p"],
                  ("vcc", "random_unseen", "combo", "cell_line_holdout"), ("leaderboard.csv", "leaderboard.md",
                                                                           "report.html"), SECTION)
