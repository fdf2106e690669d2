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

Each task is one module here (:mod:`.cells`, :mod:`.signatures`, :mod:`.labels`, :mod:`.spatial`) on the contract of
:mod:`.base`: its files (training, prediction, report inputs), its prediction writer and its report. Each task's
metrics are the metric table's entries with its name (:mod:`pertpipe.evaluation.metric_registry`); each model says
which tasks it serves (``tasks``) and implements the task's prediction method
(:data:`pertpipe.models.base.TASK_METHODS`). This package sits above models and evaluation; below it, the data
contracts (:mod:`pertpipe.data.contracts`) say what a file holds without naming a task.
"""

from __future__ import annotations

import os
from typing import Any

from pertpipe.core.h5io import value_kind
from pertpipe.errors import ConfigError
from pertpipe.tasks.base import Task
from pertpipe.tasks.cells import CELLS
from pertpipe.tasks.labels import LABELS
from pertpipe.tasks.signatures import SIGNATURES
from pertpipe.tasks.spatial import SPATIAL

TASKS: dict[str, Task] = {t.name: t for t in (CELLS, SIGNATURES, LABELS, SPATIAL)}
BY_VALUE_KIND: dict[str, Task] = {t.value_kind: t for t in TASKS.values()}  # stage 1's record of X -> its task
BY_ADAPTER: dict[str, Task] = {"perturbqa": LABELS, "l1000": SIGNATURES}  # dataset adapters whose data is not cells


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'. Fix: use one of {sorted(TASKS)}")
    return TASKS[name]


def task_of_value_kind(kind: str) -> Task:
    return BY_VALUE_KIND.get(kind, CELLS)


def task_of_dataset(entry: Any) -> Task:
    """The task of a registry dataset entry: spatial pairs, PerturbQA (labels), L1000 (signatures), else cells."""
    if getattr(entry, "kind", None) == "spatial":
        return SPATIAL
    return BY_ADAPTER.get(getattr(entry, "adapter", None), CELLS)


def task_of_file(path: str | os.PathLike) -> Task:
    """The task of a stage-1 file, from its provenance (``uns['pertpipe']['standardize']['scale']``)."""
    return task_of_value_kind(value_kind(path))


__all__ = ["TASKS", "Task", "get_task", "task_of_dataset", "task_of_file", "task_of_value_kind"]
