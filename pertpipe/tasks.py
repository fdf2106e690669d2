"""Tasks, declared once: what a kind of data is, how it is split, predicted, scored and shown.

A run's task follows from its data (:func:`task_of_dataset`, :func:`task_of_file`); rules, scripts and the
predict/score code ask the task instead of testing flags:

* ``cells``: single cells, X = log1p of normalised counts (raw counts in ``layers["counts"]`` where known); models
  predict cells from drawn training controls; cell-eval's metrics; ``leaderboard.{csv,md}`` and ``report.html``.
* ``signatures``: L1000 signatures, X = z-scores (clipped at +-10); models predict one signature per (perturbation,
  context); DeepCE's signature metrics; ``signature_leaderboard.{csv,md}`` and ``report.html``.
* ``labels``: per (perturbation, cell line) x readout gene, a DE label and a direction label (PerturbQA); models
  score every test pair (:meth:`predict_labels`); PerturbQA's ``auc_per_gene`` and AUPRC per gene;
  ``label_leaderboard.{csv,md,png}`` beside the published rows and ``report.html``.
* ``spatial``: a spatial slide paired with a scRNA-seq reference (raw counts, ``obsm["spatial"]``, reference
  ``obs["cell_type"]``); LR genes are imputed; SpatialBenchmarking's per-gene metrics; ``spatial/spatial_report.json`` and ``report.html``.

Each task's metrics are the metric table's entries with its name (:mod:`pertpipe.evaluation.metric_registry`);
each model says which tasks it serves (``tasks``) and implements the task's prediction method (``predicts``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pertpipe.errors import ConfigError


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    x: str  # what X holds
    obs: tuple[str, ...]  # obs columns the contract requires
    value_kind: str | None  # stage 1's record of X (uns pertpipe.standardize.scale): log1p / zscore
    require_controls: bool  # the contract needs non-targeting controls
    splits: tuple[str, ...]  # stage1.split.strategy values that fit
    predicts: str  # the model method the predict rule calls for this task
    leaderboard: tuple[str, ...]  # files under results/{dataset}/ that stage 3 makes
    report: str  # the report's section title

    def metrics(self) -> list[Any]:
        from pertpipe.evaluation.metric_registry import metrics

        return metrics(task=self.name)

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

    def stage3_targets(self, results: str, dataset: str) -> list[str]:
        return [f"{results}/{dataset}/{name}" for name in self.leaderboard]


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cells", "single-cell perturbation responses", "log1p of normalised counts per cell",
         ("target_gene", "batch", "cell_type"), "log1p", True, ("vcc", "random_unseen", "combo", "cell_line_holdout"),
         "predict_cells", ("leaderboard.csv", "leaderboard.md", "report.html"), "Perturbation response (cells)"),
    Task("signatures", "perturbation signatures (L1000)", "z-scores per signature (clipped at +-10)",
         ("target_gene", "batch", "cell_type"), "zscore", False, ("random_unseen", "cell_line_holdout"),
         "predict_signature", ("signature_leaderboard.csv", "signature_leaderboard.md", "report.html"),
         "Signatures (L1000)"),
    Task("labels", "DE and direction labels of perturbations (PerturbQA)",
         "int8 codes per (perturbation, line) x readout gene: 1, 0, -1 = unlabelled (layers['dir']: direction)",
         ("target_gene", "cell_type", "given_split"), "labels", False, ("given", "random_unseen", "cell_line_holdout"),
         "predict_labels", ("label_leaderboard.csv", "label_leaderboard.md", "label_leaderboard.png", "report.html"),
         "Perturbation labels (PerturbQA)"),
    Task("spatial", "ligand-receptor imputation of a spatial slide from paired scRNA-seq",
         "raw counts per spot / cell (obsm['spatial'] on the slide, obs['cell_type'] on the reference)",
         ("cell_type",), None, False, ("kfold_genes",), "impute", ("spatial/spatial_report.json", "report.html"),
         "Spatial LR imputation"),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'. Fix: use one of {sorted(TASKS)}")
    return TASKS[name]


def task_of_value_kind(kind: str) -> Task:
    return {"zscore": TASKS["signatures"], "labels": TASKS["labels"]}.get(kind, TASKS["cells"])


def task_of_dataset(entry: Any) -> Task:
    """The task of a registry dataset entry: spatial pairs, PerturbQA (labels), L1000 (signatures), else cells."""
    if getattr(entry, "kind", None) == "spatial":
        return TASKS["spatial"]
    if getattr(entry, "adapter", None) == "perturbqa":
        return TASKS["labels"]
    return TASKS["signatures"] if getattr(entry, "adapter", None) == "l1000" else TASKS["cells"]


def task_of_file(path: str | os.PathLike) -> Task:
    """The task of a stage-1 file, from its provenance (``uns['pertpipe']['standardize']['scale']``)."""
    from pertpipe.core.h5io import value_kind

    return task_of_value_kind(value_kind(path))
