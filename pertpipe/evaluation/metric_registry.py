"""The metric table: every metric the pipeline reports, for every task, in one place.

An entry names the metric (leaderboard name), its task (``cells``: cell-eval's metrics and the effect metrics;
``signatures``: DeepCE's signature metrics; ``spatial``: SpatialBenchmarking's per-gene metrics), its column
(cell-eval's ``results.csv`` column where cell-eval reports it), its best value and direction, a description, and
the local implementation: a function of the task's scoring context returning a value per scored unit
(perturbation, signature or gene). Scoring (:mod:`pertpipe.evaluation.scoring`, the signature scorer, the spatial
evaluation), the consistency check against cell-eval, ``cell-eval score``'s read-out, the leaderboards, the report
and ``bench_scoring`` all read this table, so adding a metric is one :func:`register_metric` call.

Contexts: cells :class:`pertpipe.evaluation.scoring.ScoringContext`; signatures
:class:`pertpipe.evaluation.signatures.SignatureContext`; spatial :class:`pertpipe.evaluation.spatial.GeneColumns`;
labels :class:`pertpipe.evaluation.labels.LabelContext`.

``in_cell_eval``: cell-eval's run reports the column too (the consistency check compares the two).
``in_avg_score``: part of cell-eval score's avg_score (DES, PDS, MAE), so score.json has its scaled value.

This module imports the computations it registers and nothing that reads the table, so the layering is one-way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pertpipe.evaluation import spatial as spatial_metrics

TASK_UNITS = {"cells": "perturbation", "signatures": "signature", "spatial": "gene", "labels": "readout gene"}


@dataclass(frozen=True)
class Metric:
    name: str
    column: str
    best: float
    higher_is_better: bool
    description: str
    local: Callable[[Any], dict[str, float]]
    in_cell_eval: bool = True
    in_avg_score: bool = False
    aggregate: Callable[[np.ndarray], float] = np.mean  # over the task's units
    missing: float = float("nan")  # a unit the local function gives no value for
    task: str = "cells"

    def __post_init__(self) -> None:
        if self.task not in TASK_UNITS:
            raise ValueError(f"metric {self.name}: unknown task {self.task!r} (one of {sorted(TASK_UNITS)})")


METRICS: dict[str, Metric] = {}


def _key(task: str, name: str) -> str:
    return f"{task}:{name}"


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the table (its name and column must be new within its task)."""
    same_task = [m for m in METRICS.values() if m.task == metric.task]
    if _key(metric.task, metric.name) in METRICS or any(m.column == metric.column for m in same_task):
        raise ValueError(f"metric {metric.name} / column {metric.column} is registered already")
    METRICS[_key(metric.task, metric.name)] = metric
    return metric


def unregister_metric(name: str, task: str = "cells") -> None:
    METRICS.pop(_key(task, name), None)


def metrics(*, in_cell_eval: bool | None = None, in_avg_score: bool | None = None, task: str = "cells"
            ) -> list[Metric]:
    """Registered metrics of ``task`` in registration order, optionally only those cell-eval reports / scores."""
    return [m for m in METRICS.values() if m.task == task and (in_cell_eval is None or m.in_cell_eval == in_cell_eval)
            and (in_avg_score is None or m.in_avg_score == in_avg_score)]


def score_context(ctx: Any, keys: list[str], *, task: str, key_column: str) -> tuple[Any, dict[str, Any]]:
    """Every registered metric of ``task`` on ``ctx``: a table (one row per key: perturbation, signature, gene)
    and each metric's aggregate over the keys."""
    import pandas as pd

    table = pd.DataFrame({key_column: keys})
    agg: dict[str, Any] = {}
    for m in metrics(task=task):
        values = m.local(ctx)
        table[m.column] = [values.get(k, m.missing) for k in keys]
        col = table[m.column].dropna().to_numpy()
        agg[m.column] = float(m.aggregate(col)) if len(col) else None
    return table, agg


def legend(task: str = "cells") -> str:
    """One line for leaderboards: what each column means."""
    return "; ".join(f"{m.name} = {m.column} ({m.description})" for m in metrics(task=task))


# -- cells: cell-eval's VCC metrics and the effect (signature-style) view of single-cell predictions ------------
def _des(ctx: Any) -> dict[str, float]:
    from pertpipe.evaluation.metrics import des_scores

    return des_scores(ctx.de_real, ctx.de_pred)


def _variance_ratio(ctx: Any) -> dict[str, float]:
    from pertpipe.evaluation.metrics import variance_ratios

    return variance_ratios(ctx.real, ctx.pred)


def _edistance(squared: bool) -> Callable[[Any], dict[str, float]]:
    def fn(ctx: Any) -> dict[str, float]:
        from pertpipe.evaluation.metrics import e_distances

        return e_distances(ctx.real, ctx.pred, squared=squared)
    return fn


register_metric(Metric(
    "DES", "overlap_at_N", 1.0, True, "overlap of the predicted top-N DE genes with the N real ones (pdex MWU, BH)",
    _des, in_avg_score=True, missing=0.0))
register_metric(Metric(
    "PDS", "discrimination_score_l1", 1.0, True, "1 - normalised rank of the true perturbation by L1 distance of "
    "effects, target gene left out", lambda ctx: ctx.mae_pds[1], in_avg_score=True))
register_metric(Metric(
    "MAE", "mae", 0.0, False, "mean absolute error of the pseudobulk over genes",
    lambda ctx: ctx.mae_pds[0], in_avg_score=True))
register_metric(Metric(
    "variance_ratio", "variance_ratio", 1.0, True, "predicted cells' per-gene variance over the truth's "
    "(median over perturbations; 1 = as spread as the real cells)", _variance_ratio, in_cell_eval=False,
    aggregate=np.median))
register_metric(Metric(
    "edistance", "edistance", 0.0, False, "E-distance of predicted and real cells in the truth controls' PCA space "
    "(pertpy's: 2E|X-Y|² - E|X-X'|² - E|Y-Y'|², which is 2|mean X - mean Y|²)", _edistance(True),
    in_cell_eval=False))
register_metric(Metric(
    "energy_distance", "energy_distance", 0.0, False, "energy distance of predicted and real cells in the same PCA "
    "space (Euclidean, not squared: 0 only for the same distribution, so it sees the spread)", _edistance(False),
    in_cell_eval=False))
register_metric(Metric(
    "pearson_delta", "pearson_delta", 1.0, True, "Pearson correlation of the predicted and real effect (pseudobulk - "
    "control) over genes, as L1000 studies report it", lambda ctx: ctx.effect_scores["pearson"], in_cell_eval=False))
register_metric(Metric(
    "spearman_delta", "spearman_delta", 1.0, True, "Spearman correlation of the predicted and real effect",
    lambda ctx: ctx.effect_scores["spearman"], in_cell_eval=False))
register_metric(Metric(
    "precision50_delta", "precision_at_50_delta", 1.0, True, "precision@50 of the top up- and down-regulated genes "
    "of the effect (mean of the two)", lambda ctx: ctx.effect_scores["precision@50"], in_cell_eval=False))


# -- signatures: DeepCE's metrics, per true signature against the prediction for its (perturbation, context) ------
def _signature_metric(name: str, best: float, higher: bool, description: str) -> None:
    register_metric(Metric(name, name, best, higher, description, lambda ctx: ctx.per_signature(name),
                           in_cell_eval=False, task="signatures"))


_signature_metric("pearson", 1.0, True, "Pearson correlation of predicted and true signature over genes")
_signature_metric("spearman", 1.0, True, "Spearman correlation of predicted and true signature")
_signature_metric("rmse", 0.0, False, "root mean squared error of the z-scores")
for _k in (10, 20, 50, 100):
    _signature_metric(f"precision@{_k}", 1.0, True, f"precision@{_k} of the top up- and down-regulated genes "
                      "(mean of the two)")


# -- spatial: SpatialBenchmarking's per-gene metrics of held-out genes -------------------------------------------
def _spatial_metric(name: str, fn: Callable, best: float, higher: bool, description: str) -> None:
    register_metric(Metric(name, name, best, higher, description, lambda ctx: ctx.per_gene(fn), in_cell_eval=False,
                           aggregate=np.median, task="spatial"))


_spatial_metric("pcc", spatial_metrics.pcc, 1.0, True, "Pearson correlation across spots")
_spatial_metric("ssim", spatial_metrics.ssim, 1.0, True, "structural similarity of the max-scaled vectors")
_spatial_metric("rmse", spatial_metrics.rmse, 0.0, False, "RMSE of the vectors z-scored across spots")
_spatial_metric("js", spatial_metrics.js, 0.0, False, "Jensen-Shannon divergence of the vectors as distributions")


# -- labels: PerturbQA's auc_per_gene (per readout gene over the test perturbations; one-class genes skipped) -------
def _label_metric(name: str, kind: str, fn: str, description: str) -> None:
    register_metric(Metric(name, name, 1.0, True, description, lambda ctx: ctx.per_gene(kind, fn), in_cell_eval=False,
                           task="labels"))


_label_metric("auc_de", "de", "auc", "PerturbQA auc_per_gene of the DE labels: ROC AUC per readout gene over the test "
              "perturbations, mean over genes with both classes")
_label_metric("auc_dir", "dir", "auc", "auc_per_gene of the direction labels (1 = up) over the DE pairs")
_label_metric("auprc_de", "de", "auprc", "average precision per readout gene of the DE labels, mean over genes")
