"""``labels``: per (perturbation, cell line) x readout gene, a DE label and a direction label (PerturbQA); models
score every test pair (``predict_labels``); PerturbQA's ``auc_per_gene`` and AUPRC per gene;
``label_leaderboard.{csv,md,png}`` beside the published rows and ``report.html``."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pertpipe.core.layout import RunLayout
from pertpipe.data.contracts import CONTRACTS
from pertpipe.evaluation.labels import SECTION
from pertpipe.tasks.base import Task, train_logs


class LabelsTask(Task):
    stage1_reports: ClassVar[tuple[str, ...]] = ("labels_report.json", "labels_report.txt")
    train_files: ClassVar[dict[str, str]] = {"train": "labels_train.h5ad", "split": "labels_split.json"}
    predict_files: ClassVar[dict[str, str]] = {"template": "labels_template.csv"}
    knowledge_genes_file: ClassVar[str] = "label_genes.txt"  # perturbations + readout genes

    def report_inputs(self, layout: RunLayout, dataset: str, models: list[str]) -> dict[str, Any]:
        """The label leaderboard, its figure, the stage-1 report, the training logs and metrics."""
        return {"leaderboard": layout.top("label_leaderboard.csv", dataset),
                "figure": layout.top("label_leaderboard.png", dataset),
                "stage1": layout.stage1("labels_report.json", dataset),
                "logs": [layout.stage2("train_log.json", dataset, m) for m in models],
                "metrics": [layout.stage3("label_metrics.json", dataset, m) for m in models]}

    def write_predictions(self, model: Any, template: Any, train: str | os.PathLike, dest: str | os.PathLike, *,
                          seed: int, uns: dict[str, Any] | None, chunk_size: int) -> tuple[dict[str, Any], Any]:
        from pertpipe.models.predict import write_label_predictions

        return write_label_predictions(model, template, dest, uns=uns)

    def render_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str], links: str) -> str:
        import pandas as pd

        from pertpipe.evaluation.labels import html_report
        from pertpipe.io import package_versions, read_json

        return html_report(dataset=dataset, board=pd.read_csv(inputs["leaderboard"]), figure_png=inputs["figure"],
                           stage1=read_json(inputs["stage1"]), train_logs=train_logs(inputs, models),
                           versions=package_versions(), links=links)


LABELS = LabelsTask("labels", "DE and direction labels of perturbations (PerturbQA)", CONTRACTS["labels"],
                    ("given", "random_unseen", "cell_line_holdout"),
                    ("label_leaderboard.csv", "label_leaderboard.md", "label_leaderboard.png", "report.html"), SECTION)
