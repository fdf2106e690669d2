"""The metric table: every metric the pipeline reports, in one place.

An entry names the metric (leaderboard name), its column (cell-eval's ``results.csv`` column where cell-eval
reports it), its best value and direction, a description, and the local implementation: a function of a
:class:`ScoringContext` returning a value per perturbation. Scoring (:func:`pertpipe.evaluation.metrics.score_local`),
the consistency check against cell-eval, ``cell-eval score``'s read-out, the leaderboard, the report and
``bench_scoring`` all read this table, so adding a metric is one :func:`register_metric` call.

``in_cell_eval``: cell-eval's run reports the column too (the consistency check compares the two).
``in_avg_score``: part of cell-eval score's avg_score (DES, PDS, MAE), so score.json has its scaled value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from pertpipe import CONTROL_LABEL


@dataclass
class ScoringContext:
    """Truth and predictions of one model, with the intermediate results metrics share (computed once)."""

    real: Any  # pertpipe.evaluation.metrics.Expression
    pred: Any
    de_real_given: dict[str, dict] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def de_real(self) -> dict[str, dict]:
        from pertpipe.evaluation.metrics import de_table

        return self.de_real_given if self.de_real_given is not None else de_table(self.real)

    @cached_property
    def de_pred(self) -> dict[str, dict]:
        from pertpipe.evaluation.metrics import de_table

        return de_table(self.pred)

    @cached_property
    def mae_pds(self) -> tuple[dict[str, float], dict[str, float]]:
        from pertpipe.evaluation.metrics import mae_pds_scores

        return mae_pds_scores(self.real, self.pred)

    @cached_property
    def effect_scores(self) -> dict[str, dict[str, float]]:
        """Signature metrics (Pearson, Spearman, precision@k) of each perturbation's predicted vs real effect
        (pseudobulk mean - control mean): the L1000 field's view, beside cell-eval's."""
        from pertpipe.evaluation.metrics import _means
        from pertpipe.evaluation.signatures import signature_scores

        mr, mp = _means(self.real), _means(self.pred)
        out: dict[str, dict[str, float]] = {}
        for p in self.perturbations:
            s = signature_scores(mr.loc[p].to_numpy() - mr.loc[CONTROL_LABEL].to_numpy(),
                                 mp.loc[p].to_numpy() - mp.loc[CONTROL_LABEL].to_numpy(), ks=(50,))
            for k, v in s.items():
                out.setdefault(k, {})[p] = v
        return out

    @property
    def perturbations(self) -> list[str]:
        return sorted(self.mae_pds[0])


@dataclass(frozen=True)
class Metric:
    name: str
    column: str
    best: float
    higher_is_better: bool
    description: str
    local: Callable[[ScoringContext], dict[str, float]]
    in_cell_eval: bool = True
    in_avg_score: bool = False
    aggregate: Callable[[np.ndarray], float] = np.mean  # over perturbations
    missing: float = float("nan")  # a perturbation the local function gives no value for


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the table (its name and column must be new)."""
    if metric.name in METRICS or any(m.column == metric.column for m in METRICS.values()):
        raise ValueError(f"metric {metric.name} / column {metric.column} is registered already")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    METRICS.pop(name, None)


def metrics(*, in_cell_eval: bool | None = None, in_avg_score: bool | None = None) -> list[Metric]:
    """Registered metrics in registration order, optionally only those cell-eval reports / scores."""
    return [m for m in METRICS.values() if (in_cell_eval is None or m.in_cell_eval == in_cell_eval)
            and (in_avg_score is None or m.in_avg_score == in_avg_score)]


def legend() -> str:
    """One line for leaderboards: what each column means."""
    return "; ".join(f"{m.name} = {m.column} ({m.description})" for m in METRICS.values())


def _des(ctx: ScoringContext) -> dict[str, float]:
    from pertpipe.evaluation.metrics import des_scores

    return des_scores(ctx.de_real, ctx.de_pred)


def _variance_ratio(ctx: ScoringContext) -> dict[str, float]:
    from pertpipe.evaluation.metrics import variance_ratios

    return variance_ratios(ctx.real, ctx.pred)


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
    "pearson_delta", "pearson_delta", 1.0, True, "Pearson correlation of the predicted and real effect (pseudobulk - "
    "control) over genes, as L1000 studies report it", lambda ctx: ctx.effect_scores["pearson"], in_cell_eval=False))
register_metric(Metric(
    "spearman_delta", "spearman_delta", 1.0, True, "Spearman correlation of the predicted and real effect",
    lambda ctx: ctx.effect_scores["spearman"], in_cell_eval=False))
register_metric(Metric(
    "precision50_delta", "precision_at_50_delta", 1.0, True, "precision@50 of the top up- and down-regulated genes "
    "of the effect (mean of the two)", lambda ctx: ctx.effect_scores["precision@50"], in_cell_eval=False))
