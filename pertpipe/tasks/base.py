"""The task contract: what a kind of data is (its :class:`~pertpipe.data.contracts.Contract`), how it may be split,
and what a run of it needs and makes. Rules, the run plan and the scripts ask the run's task for its files, its
prediction writer and its report instead of testing which task it is; each task is one module of this package."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pertpipe.core.layout import RunLayout
from pertpipe.data.contracts import Contract
from pertpipe.errors import ConfigError
from pertpipe.models.base import TASK_METHODS


@dataclass(frozen=True)
class Task(ABC):
    name: str
    summary: str
    contract: Contract
    splits: tuple[str, ...]  # stage1.split.strategy values that fit
    leaderboard: tuple[str, ...]  # files under results/{dataset}/ that stage 3 makes
    report: str  # the report's section title

    # what the run's rules read and make (stage-1 file names under results/{dataset}/stage1/)
    stage1_reports: ClassVar[tuple[str, ...]] = ("stage1_report.json", "stage1_report.txt")
    train_files: ClassVar[dict[str, str]] = {"train": "train.h5ad", "split": "split.json"}
    predict_files: ClassVar[dict[str, str]] = {}  # what to predict, beside the model and the training split
    # the genes the knowledge stage describes: the readout genes and every perturbation target (rule knowledge_genes)
    knowledge_genes_file: ClassVar[str] = "knowledge_genes.txt"
    scores_raw_rows: ClassVar[bool] = False  # a shrunk model is also scored raw (`<model>_raw`)
    scores_in_batches: ClassVar[bool] = False  # stage 3 scores rows in batches (cell-eval, the local scorer)
    scores_vcc2026: ClassVar[bool] = False  # cell-eval2's vcc2026 preset applies

    # -- what the data is ------------------------------------------------------------------------------------
    @property
    def x(self) -> str:
        return self.contract.x

    @property
    def obs(self) -> tuple[str, ...]:
        return self.contract.obs

    @property
    def value_kind(self) -> str:
        return self.contract.value_kind

    @property
    def require_controls(self) -> bool:
        return self.contract.require_controls

    @property
    def predicts(self) -> str:
        """The model method the predict rule calls for this task (:data:`pertpipe.models.base.TASK_METHODS`)."""
        return TASK_METHODS[self.name]

    def metrics(self) -> list[Any]:
        from pertpipe.evaluation.metric_registry import metrics

        return metrics(task=self.name)

    # -- which models and splits fit -----------------------------------------------------------------------
    def supports(self, model_cls: type) -> bool:
        return self.name in getattr(model_cls, "tasks", ()) and callable(getattr(model_cls, self.predicts, None))

    def check_models(self, models: dict[str, type], *, dataset: str, registry: dict[str, type]) -> None:
        """Refuse configured models that do not serve this task, naming the registered ones that do."""
        bad = [n for n, cls in models.items() if not self.supports(cls)]
        if bad:
            ok = sorted(n for n, cls in registry.items() if self.supports(cls))
            raise ConfigError(f"dataset '{dataset}' is a {self.name} task ({self.x}), but models {bad} do not "
                              f"predict it. Fix: set `models:` to models that do ({', '.join(ok)})")

    def check_split(self, strategy: str, *, dataset: str) -> None:
        """Refuse a split strategy that does not fit this task's data (e.g. the VCC split on L1000 signatures)."""
        if strategy not in self.splits:
            raise ConfigError(f"stage1.split.strategy is '{strategy}', but dataset '{dataset}' is a {self.name} task "
                              f"({self.x}). Fix: use one of {list(self.splits)}")

    # -- the run's files -----------------------------------------------------------------------------------
    def stage1_targets(self, layout: RunLayout, dataset: str) -> list[str]:
        return [layout.stage1(n, dataset) for n in self.stage1_reports]

    def stage3_targets(self, results: str, dataset: str) -> list[str]:
        return [f"{results}/{dataset}/{name}" for name in self.leaderboard]

    @property
    def leaderboard_csv(self) -> str | None:
        return next((n for n in self.leaderboard if n.endswith(".csv")), None)

    def train_inputs(self, layout: RunLayout) -> dict[str, str]:
        """The training split and its record (the record holds the file's sha256, checked before training)."""
        return {k: layout.stage1(v) for k, v in self.train_files.items()}

    def predict_inputs(self, layout: RunLayout, trained: str) -> dict[str, str]:
        """The predict rule's inputs: the fitted model ``trained`` and its record, the training split, and what to
        predict (:attr:`predict_files`)."""
        return {"model": layout.stage2("model.pt", model=trained),
                "train_log": layout.stage2("train_log.json", model=trained), **self.train_inputs(layout),
                **{k: layout.stage1(v) for k, v in self.predict_files.items()}}

    def knowledge_genes(self, layout: RunLayout) -> str:
        return layout.stage1(self.knowledge_genes_file)

    @abstractmethod
    def report_inputs(self, layout: RunLayout, dataset: str, models: list[str]) -> dict[str, Any]:
        """The report rule's inputs (lists per model in ``models`` order)."""

    # -- predicting and reporting -------------------------------------------------------------------------
    @abstractmethod
    def write_predictions(self, model: Any, template: Any, train: str | os.PathLike, dest: str | os.PathLike, *,
                          seed: int, uns: dict[str, Any] | None, chunk_size: int) -> tuple[dict[str, Any], Any]:
        """The predict rule's work: write the predictions at ``dest``; return (summary, attention table)."""

    @abstractmethod
    def render_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str], links: str) -> str:
        """The task's report page (HTML) from the report rule's inputs."""

    def write_report(self, *, dataset: str, inputs: dict[str, Any], models: list[str],
                     out_html: str | os.PathLike) -> str:
        """Render the task's page with links to the run's files and write it atomically to ``out_html``."""
        from pertpipe import report_page
        from pertpipe.evaluation.run_report import links

        text = self.render_report(dataset=dataset, inputs=inputs, models=models, links=links(out_html))
        report_page.write(out_html, text)
        return text


def train_logs(inputs: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The training logs among a report's inputs, by model."""
    from pertpipe.io import read_json

    return {m: read_json(p) for m, p in zip(models, inputs.get("logs", []))}
