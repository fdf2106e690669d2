"""``signatures``: L1000 signatures, X = z-scores (clipped at +-10); models predict one signature per (perturbation,
context); DeepCE's signature metrics; ``signature_leaderboard.{csv,md}`` and ``report.html``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pertpipe.core.layout import RunLayout
from pertpipe.data.contracts import CONTRACTS
from pertpipe.evaluation.signatures import SECTION
from pertpipe.tasks.base import Task, train_logs


class SignaturesTask(Task):
    predict_files: ClassVar[dict[str, str]] = {"template": "template.csv", "ground_truth": "ground_truth.json"}

    def report_inputs(self, layout: RunLayout, dataset: str, models: list[str]) -> dict[str, Any]:
        """The signature leaderboard, each model's metrics and per-signature table, the training logs, stage 1."""
        def per_model(path, name):
            return [path(name, dataset=dataset, model=m) for m in models]

        return {"leaderboard": layout.top("signature_leaderboard.csv", dataset),
                "stage1": layout.stage1("stage1_report.json", dataset),
                "logs": per_model(layout.stage2, "train_log.json"),
                "metrics": per_model(layout.stage3, "signature_metrics.json"),
                "tables": per_model(layout.stage3, "signature_results.csv")}

    def write_predictions(self, model: Any, template: Any, train: str | os.PathLike, dest: str | os.PathLike, *,
                          seed: int, uns: dict[str, Any] | None, chunk_size: int) -> tuple[dict[str, Any], Any]:
        from pertpipe.models.predict import attention_table, write_signature_predictions

        return write_signature_predictions(model, template, dest, uns=uns), attention_table(
            model, template.iloc[:0], train, seed=seed)

    def render_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str], links: str) -> str:
        import pandas as pd

        from pertpipe.evaluation.signatures import html_report
        from pertpipe.io import package_versions, read_json

        return html_report(dataset=dataset, board=pd.read_csv(inputs["leaderboard"]),
                           summaries={m: read_json(p) for m, p in zip(models, inputs["metrics"])},
                           tables={m: pd.read_csv(p) for m, p in zip(models, inputs["tables"])},
                           stage1=read_json(inputs["stage1"]), train_logs=train_logs(inputs, models),
                           versions=package_versions(), links=links)


SIGNATURES = SignaturesTask("signatures", "perturbation signatures (L1000)", CONTRACTS["zscore"],
                            ("random_unseen", "cell_line_holdout"),
                            ("signature_leaderboard.csv", "signature_leaderboard.md", "report.html"), SECTION)
