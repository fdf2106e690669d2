"""Scoring with the metric table: the :class:`ScoringContext` every cells-task metric reads, and the local scorer.

The layering is one-way: :mod:`~pertpipe.evaluation.metrics` computes (no registry), the
:mod:`~pertpipe.evaluation.metric_registry` lists what is reported (calling those computations through a context),
and this module builds the context and runs the table (:func:`score_local`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.evaluation.de import Expression, de_table
from pertpipe.evaluation.metric_registry import score_context
from pertpipe.evaluation.metrics import group_means, mae_pds_scores


@dataclass
class ScoringContext:
    """Truth and predictions of one model, with the intermediate results metrics share (computed once)."""

    real: Expression
    pred: Expression
    de_real_given: dict[str, dict] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def de_real(self) -> dict[str, dict]:
        return self.de_real_given if self.de_real_given is not None else de_table(self.real)

    @cached_property
    def de_pred(self) -> dict[str, dict]:
        return de_table(self.pred)

    @cached_property
    def mae_pds(self) -> tuple[dict[str, float], dict[str, float]]:
        return mae_pds_scores(self.real, self.pred)

    @cached_property
    def effect_scores(self) -> dict[str, dict[str, float]]:
        """Signature metrics (Pearson, Spearman, precision@k) of each perturbation's predicted vs real effect
        (pseudobulk mean - control mean): the L1000 field's view, beside cell-eval's."""
        from pertpipe.evaluation.signatures import signature_scores

        mr, mp = group_means(self.real), group_means(self.pred)
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


def score_local(pred: str | os.PathLike, truth: str | os.PathLike, *,
                de_real: dict[str, dict] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-perturbation values of every registered cells metric (results.csv layout) and their aggregates."""
    real, pr = Expression.read(truth), Expression.read(pred)
    if not np.array_equal(real.genes, pr.genes):
        raise ValueError("gene order differs between truth and predictions")
    ctx = ScoringContext(real, pr, de_real)
    return score_context(ctx, ctx.perturbations, task="cells", key_column="perturbation")
