"""Per-gene metrics of spatial imputation (SpatialBenchmarking, Li et al. 2022 Nat Methods), as pure functions.

Each compares one gene's imputed vector with its measured one across spots (truth = the spot's log1p-normalised
expression): PCC; SSIM of the two vectors scaled to [0, 1] by their maxima (C1 = 0.01^2, C2 = 0.03^2, one global
window); RMSE of the two vectors z-scored across spots; JS divergence (natural log) of the two vectors normalised
to distributions over spots. They are entries of the metric table (task ``spatial``,
:mod:`pertpipe.evaluation.metric_registry`), which is how the evaluation runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GeneColumns:
    """What a spatial metric reads: predicted and measured values (spots x genes) with the genes' names."""

    pred: np.ndarray
    truth: np.ndarray
    genes: list[str]

    def per_gene(self, fn) -> dict[str, float]:
        return {g: fn(self.pred[:, j], self.truth[:, j]) for j, g in enumerate(self.genes)}


def _f64(*vs: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(v, np.float64) for v in vs]


def scaled(v: np.ndarray) -> np.ndarray:
    """``v`` divided by its maximum (zeros where the maximum is not positive)."""
    m = np.max(v)
    return v / m if m > 0 else np.zeros_like(v)


def _z(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / v.std() if v.std() > 0 else np.zeros_like(v)


def pcc(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = _f64(pred, truth)
    return float(np.corrcoef(pred, truth)[0, 1]) if pred.std() > 0 and truth.std() > 0 else 0.0


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    x, y = (scaled(v) for v in _f64(pred, truth))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (x.var() + y.var() + c2)))


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = _f64(pred, truth)
    return float(np.sqrt(np.mean((_z(pred) - _z(truth)) ** 2)))


def js(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = _f64(pred, truth)
    p = pred / pred.sum() if pred.sum() > 0 else np.full_like(pred, 1 / len(pred))
    q = truth / truth.sum() if truth.sum() > 0 else np.full_like(truth, 1 / len(truth))
    mid = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / b[nz])))

    return 0.5 * kl(p, mid) + 0.5 * kl(q, mid)
