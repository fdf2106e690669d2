"""The per-gene refinements lrimpute's validation may switch on, each a plain function: the residual transfer from
visible genes, the expression regression and its blend, smoothing over spot neighbours, the depth step (what a spot
of that depth would measure) and the offset."""

from __future__ import annotations

from typing import Any

import numpy as np

from pertpipe.spatial.model import (
    columns,
    knn_labels,
    standardize,
)
from pertpipe.spatial.prepare import Prepared


def per_gene(metric: Any, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``metric`` (a :mod:`pertpipe.evaluation.spatial` function) of every gene column."""
    return np.array([metric(pred[:, j], truth[:, j]) for j in range(truth.shape[1])], dtype=np.float64)


def pccs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    from pertpipe.evaluation.spatial import pcc

    return per_gene(pcc, pred, truth)


def ssims(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    from pertpipe.evaluation.spatial import ssim

    return per_gene(ssim, pred, truth)


def shift_up(pred: np.ndarray, c: float) -> np.ndarray:
    """The prediction plus ``c`` x its mean across spots, per gene (a shift: correlations are unchanged)."""
    return pred if c <= 0 else (pred + c * pred.mean(0, keepdims=True)).astype(np.float32)


def expected_measurement(pred: np.ndarray, library: np.ndarray, *, target_sum: float = 1e4,
                         exact_below: float = 50.0) -> np.ndarray:
    """Spots x genes: what the slide would measure at each spot's depth given the prediction.

    ``pred`` is on the log1p scale of counts per ``target_sum`` (a mean of single cells' values); the spot's count is
    taken as X ~ Poisson(L x expm1(pred) / target_sum) at its library size L, and the value returned is the
    measurement's expectation on the evaluation's scale, E[log1p(X x target_sum / L)]. The sum over X is exact for
    rates up to ``exact_below`` (counts up to the gene's largest rate + 8 sd) and the second-order expansion above
    (log1p is nearly linear there); memory is spots x at most about 120 per gene. A sparse gene is mostly measured
    as 0 and, when seen, as a large value in a shallow spot, so its measured value rises with depth in a way a
    depth-free prediction cannot follow."""
    lib = np.asarray(library, dtype=np.float64).ravel()
    c = target_sum / lib  # the normalisation factor of each spot
    out = np.empty(pred.shape, dtype=np.float64)
    x = np.arange(1, int(np.ceil(exact_below + 8 * np.sqrt(exact_below) + 10)) + 1, dtype=np.float64)
    values = np.log1p(x[None, :] * c[:, None])  # spots x counts: the measured value of each count
    for j in range(pred.shape[1]):
        lam = np.expm1(np.clip(np.asarray(pred[:, j], dtype=np.float64), 0, None)) / c
        small = lam <= exact_below
        col = np.empty_like(lam)
        if small.any():
            ls = lam[small]
            top = float(ls.max())
            n = min(len(x), int(np.ceil(top + 8 * np.sqrt(top) + 10)))
            pmf = np.exp(-ls)[:, None] * np.cumprod(ls[:, None] / x[None, :n], axis=1)  # P(X = x), x >= 1
            col[small] = (pmf * values[small, :n]).sum(1)
        if (~small).any():
            lb, cb = lam[~small], c[~small]
            col[~small] = np.log1p(lb * cb) - lb * cb ** 2 / (2 * (1 + lb * cb) ** 2)
        out[:, j] = col
    return out.astype(np.float32)


def _within_type(x: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Each cell's deviation from its cell type's mean."""
    out = x.astype(np.float64, copy=True)
    for t in np.unique(types):
        m = types == t
        out[m] -= out[m].mean(0)
    return out


def residual_transfer(prep: Prepared, idx: np.ndarray, src: list[str], dst: list[str], alpha: float) -> np.ndarray:
    """Spots x ``dst``: what each spot's own measurements say beyond its kNN mean, carried to the ``dst`` genes.

    The residual is the spot's standardised expression of the ``src`` genes (visible, shared) minus the standardised
    kNN mean of the same genes; a ridge (penalty ``alpha`` x the mean diagonal of XᵀX) fitted on the scRNA cells'
    within-cell-type deviations (``src`` in units of their spread -> ``dst`` on the log1p scale) maps it to ``dst``.
    Within a cell type co-expression is what the kNN mean, an average over matched cells, leaves out."""
    xs = columns(prep.sc_log, prep.sc_cols(src))
    ys = columns(prep.sc_log, prep.sc_cols(dst))
    sd = xs.std(0)
    sd[sd == 0] = 1.0
    xd = _within_type(xs, prep.cell_types) / sd
    yd = _within_type(ys, prep.cell_types)
    gram = xd.T @ xd
    lam = alpha * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-8)
    w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xd.T @ yd)
    knn_src, _ = knn_labels(idx, xs, xs)
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    own = columns(prep.sp_log, [sp_col[g] for g in src])
    resid = standardize(own) - standardize(knn_src)
    return (resid @ w).astype(np.float32)


def expression_regression(prep: Prepared, dst: list[str], alpha: float) -> np.ndarray:
    """Spots x ``dst``: each output gene read from the spot's own profile. A ridge (penalty ``alpha`` x the mean
    diagonal of the Gram matrix) fitted on the scRNA cells from the standardised visible shared genes
    (``prep.x_sc``) to ``dst`` on the log1p scale, applied to the spots' standardised profile (``prep.x_sp``).
    Solved in the smaller of the cell and gene spaces (the same ridge either way); a spot mixing several cells is a
    sum of profiles, which a linear map carries over where a nearest-cell average does not."""
    xs, xp = prep.x_sc.astype(np.float64), prep.x_sp.astype(np.float64)
    y = columns(prep.sc_log, prep.sc_cols(dst)).astype(np.float64)
    mu = y.mean(0)
    n, p = xs.shape
    if n <= p:  # dual: w = X^T (X X^T + lam I)^-1 Y
        gram = xs @ xs.T
        lam = alpha * max(float(np.trace(gram)) / n, 1e-8)
        pred = (xp @ xs.T) @ np.linalg.solve(gram + lam * np.eye(n), y - mu)
    else:
        gram = xs.T @ xs
        lam = alpha * max(float(np.trace(gram)) / n, 1e-8)  # the same penalty as the dual form
        pred = xp @ np.linalg.solve(gram + lam * np.eye(p), xs.T @ (y - mu))
    return np.clip(pred + mu, 0, None).astype(np.float32)


def blend_regression(labels: np.ndarray, reg: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) x the pseudo-labels + weight x the regression rescaled per gene to the labels' mean and spread
    across spots (a strong ridge shrinks its output toward the mean; the rescaling keeps the weight meaningful)."""
    if weight <= 0:
        return labels
    r = reg.astype(np.float64)
    sd_r, sd_l = r.std(0), labels.std(0)
    r = (r - r.mean(0)) / np.where(sd_r > 0, sd_r, 1.0) * sd_l + labels.mean(0)
    return np.clip((1 - weight) * labels + weight * r, 0, None).astype(np.float32)


def spot_neighbours(coords: np.ndarray | None, k: int) -> np.ndarray | None:
    """Each spot's ``k`` nearest other spots by coordinates (None without coordinates)."""
    if coords is None or len(coords) < 2:
        return None
    from pertpipe.spatial.model import nearest

    idx, _ = nearest(coords, coords, min(k, len(coords) - 1) + 1)
    return idx[:, 1:]


def smooth_spots(pred: np.ndarray, neighbours: np.ndarray | None, weight: float) -> np.ndarray:
    """(1 - weight) x the prediction + weight x the mean over the spot's neighbours."""
    if neighbours is None or weight <= 0:
        return pred
    return ((1 - weight) * pred + weight * pred[neighbours].mean(1)).astype(np.float32)
