"""Fast local scorer for the three VCC metrics, written to agree with the installed cell-eval/pdex.

The metrics themselves are entries of :mod:`pertpipe.evaluation.metric_registry`; this module holds their
implementations (:func:`pertpipe.evaluation.scoring.score_local` runs every registered metric). It imports neither.

* **MAE** (cell-eval ``mae``): mean over genes of |pred pseudobulk - real pseudobulk| (arithmetic means of X).
* **PDS** (``discrimination_score_l1``): for perturbation p, L1 distances from p's predicted effect
  (pred mean - pred control mean) to every real effect (real mean - real control mean), the column of
  p's own target gene left out; score = 1 - rank(p) / n_perturbations.
* **DES** (``overlap_at_N``): DE of each perturbation vs control as pdex does it in ``ref`` mode on log1p
  data: pseudobulks ``expm1(mean(X))``, ``log2(group / ref)`` (0/0 -> 0), a two-sided Mann-Whitney U test
  (asymptotic, tie-corrected, continuity-corrected) and Benjamini-Hochberg FDR per perturbation; the
  significant genes (FDR < 0.05) are ranked by |log2FC| and the overlap of the predicted top-N with the
  N real significant genes is |∩| / N.

The DE test itself is :mod:`pertpipe.evaluation.de`; the real side's DE does not depend on the model and is computed
once and reused (:func:`pertpipe.evaluation.de.de_table`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.evaluation.de import Expression, col_mean, top_de_genes


def des_scores(de_real: dict[str, dict], de_pred: dict[str, dict]) -> dict[str, float]:
    perts = sorted(de_real)
    real_top = {p: top_de_genes(de_real[p]) for p in perts}
    pred_top = {p: top_de_genes(de_pred[p]) if p in de_pred else np.array([], int) for p in perts}
    if sum(len(v) for v in real_top.values()) == 0 or sum(len(v) for v in pred_top.values()) == 0:
        return {p: 0.0 for p in perts}
    out = {}
    for p in perts:
        k = len(real_top[p])
        if k == 0:
            out[p] = 0.0
            continue
        k = min(k, len(real_top[p]))
        out[p] = len(np.intersect1d(real_top[p][:k], pred_top[p][:k])) / k
    return out


def group_means(expr: Expression) -> pd.DataFrame:
    """Per-perturbation mean of X (one group read at a time), computed once per file."""
    if expr._means is None:
        groups = expr.groups()
        names = sorted(groups)
        M = np.vstack([col_mean(expr.rows(groups[g])) for g in names])
        expr._means = pd.DataFrame(M, index=names, columns=expr.genes)
    return expr._means


def mae_pds_scores(real: Expression, pred: Expression) -> tuple[dict[str, float], dict[str, float]]:
    mr, mp = group_means(real), group_means(pred)
    if list(mr.index) != list(mp.index):
        raise ValueError(f"perturbations differ: real {list(mr.index)[:5]} vs pred {list(mp.index)[:5]}")
    perts = [p for p in mr.index if p != CONTROL_LABEL]
    mae = {p: float(np.mean(np.abs(mp.loc[p].to_numpy() - mr.loc[p].to_numpy()))) for p in perts}
    real_eff = mr.loc[perts].to_numpy() - mr.loc[CONTROL_LABEL].to_numpy()
    pred_eff = mp.loc[perts].to_numpy() - mp.loc[CONTROL_LABEL].to_numpy()
    genes = real.genes
    pds = {}
    for i, p in enumerate(perts):
        keep = np.flatnonzero(genes != p)
        d = np.abs(real_eff[:, keep] - pred_eff[i, keep][None, :]).sum(axis=1)
        rank = int(np.flatnonzero(np.argsort(d) == i)[0])
        pds[p] = 1.0 - rank / len(perts)
    return mae, pds


def _mean_gene_variance(X: np.ndarray | sp.spmatrix) -> float:
    m = col_mean(X)
    if sp.issparse(X):
        sq = col_mean(X.multiply(X))
    else:
        sq = np.einsum("ij,ij->j", X, X, dtype=np.float64) / max(X.shape[0], 1)
    return float((sq - m ** 2).mean())


def variance_ratios(real: Expression, pred: Expression) -> dict[str, float]:
    """Per perturbation: the predicted cells' per-gene variance (averaged over genes) over the truth's."""
    rg, pg = real.groups(), pred.groups()
    ratios = {}
    for p in sorted(set(rg) & set(pg)):
        if p == CONTROL_LABEL or len(rg[p]) < 2 or len(pg[p]) < 2:
            continue
        v_real = _mean_gene_variance(real.rows(rg[p]))
        if v_real > 0:
            ratios[p] = _mean_gene_variance(pred.rows(pg[p])) / v_real
    return ratios


def variance_ratio(pred: str | os.PathLike, truth: str | os.PathLike) -> dict[str, Any]:
    """:func:`variance_ratios` of two files, with median, min and max over perturbations.

    1.0 = the predicted cells spread as much as the real ones; the VCC scores distributions, so a model that
    predicts only means (ratio ~0) or adds noise (ratio >> 1) shows here.
    """
    ratios = variance_ratios(Expression.read(truth), Expression.read(pred))
    vals = np.array(list(ratios.values()))
    return {"median": float(np.median(vals)) if len(vals) else None, "min": float(vals.min()) if len(vals) else None,
            "max": float(vals.max()) if len(vals) else None, "per_perturbation": ratios}


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return (x.toarray() if sp.issparse(x) else np.asarray(x)).astype(np.float64)


def _dist_mean(a: np.ndarray, b: np.ndarray, squared: bool) -> float:
    """Mean (squared) Euclidean distance over all pairs of rows of ``a`` and ``b`` (diagonal included when a is b)."""
    aa, bb = (a * a).sum(1), (b * b).sum(1)
    d2 = np.maximum(aa[:, None] + bb[None, :] - 2.0 * a @ b.T, 0.0)
    return float(d2.mean() if squared else np.sqrt(d2).mean())


def e_distances(real: Expression, pred: Expression, *, squared: bool = True, n_pcs: int = 50, max_cells: int = 500,
                max_controls: int = 5000, seed: int = 0) -> dict[str, float]:
    """Per perturbation: the E-distance between predicted and real cells, 2·mean d(X, Y) − mean d(X, X') −
    mean d(Y, Y') (within-group means over all pairs), in the PCA space of the truth's control cells (top ``n_pcs``
    axes of the centred controls).

    ``squared=True`` is pertpy's ``edistance`` (d = squared Euclidean distance). With squared distances the formula
    reduces to 2·|mean X − mean Y|²: it compares the groups' means in PCA space, not their spread.
    ``squared=False`` (d = Euclidean distance) is the energy distance of Székely & Rizzo, which is 0 only for equal
    distributions: a model that predicts one mean per perturbation pays for the missing spread there. Groups are
    subsampled to ``max_cells`` (seeded), so the cost is bounded whatever the file size."""
    rng = np.random.default_rng(seed)
    rg, pg = real.groups(), pred.groups()
    if CONTROL_LABEL not in rg:
        return {}
    ctrl_rows = rg[CONTROL_LABEL]
    if len(ctrl_rows) > max_controls:
        ctrl_rows = np.sort(rng.choice(ctrl_rows, max_controls, replace=False))
    ctrl = _dense(real.rows(ctrl_rows))
    mu = ctrl.mean(0)
    k = max(1, min(n_pcs, ctrl.shape[0] - 1, ctrl.shape[1]))
    _u, _s, vt = np.linalg.svd(ctrl - mu, full_matrices=False)
    axes = vt[:k].T

    def embed(expr: Expression, rows: np.ndarray) -> np.ndarray:
        if len(rows) > max_cells:
            rows = np.sort(rng.choice(rows, max_cells, replace=False))
        return (_dense(expr.rows(rows)) - mu) @ axes

    out = {}
    for p in sorted(set(rg) & set(pg)):
        if p == CONTROL_LABEL or len(rg[p]) < 2 or len(pg[p]) < 1:
            continue
        x, y = embed(real, rg[p]), embed(pred, pg[p])
        out[p] = 2.0 * _dist_mean(x, y, squared) - _dist_mean(x, x, squared) - _dist_mean(y, y, squared)
    return out
