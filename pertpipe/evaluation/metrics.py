"""Fast local scorer for the three VCC metrics, written to agree with the installed cell-eval/pdex.

* **MAE** (cell-eval ``mae``): mean over genes of |pred pseudobulk - real pseudobulk| (arithmetic means of X).
* **PDS** (``discrimination_score_l1``): for perturbation p, L1 distances from p's predicted effect
  (pred mean - pred control mean) to every real effect (real mean - real control mean), the column of
  p's own target gene left out; score = 1 - rank(p) / n_perturbations.
* **DES** (``overlap_at_N``): DE of each perturbation vs control as pdex does it in ``ref`` mode on log1p
  data: pseudobulks ``expm1(mean(X))``, ``log2(group / ref)`` (0/0 -> 0), a two-sided Mann-Whitney U test
  (asymptotic, tie-corrected, continuity-corrected) and Benjamini-Hochberg FDR per perturbation; the
  significant genes (FDR < 0.05) are ranked by |log2FC| and the overlap of the predicted top-N with the
  N real significant genes is |∩| / N.

The U test runs on the non-zero entries only (all zeros of a gene form one tie block), vectorised over
all genes with one sort, which is where the speed comes from. The real side's DE does not depend on
the model and can be computed once and reused (:func:`de_table`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtr
from scipy.stats import false_discovery_control

from pertpipe import CONTROL_LABEL
from pertpipe.data.h5io import H5adReader

FDR_THRESHOLD = 0.05


@dataclass
class Expression:
    """A scored file held as CSR with its perturbation labels."""

    X: sp.csr_matrix
    labels: np.ndarray
    genes: np.ndarray

    @classmethod
    def read(cls, path: str | os.PathLike) -> Expression:
        with H5adReader(path) as r:
            X = sp.vstack([b for _s, _e, b in r.iter_chunks(20_000)]).tocsr()
            return cls(X, r.obs["target_gene"].astype(str).to_numpy(), np.asarray(r.var_names, dtype=str))

    def groups(self) -> dict[str, np.ndarray]:
        uniq, inv = np.unique(self.labels, return_inverse=True)
        return {u: np.flatnonzero(inv == i) for i, u in enumerate(uniq)}


def mannwhitneyu_sparse(x: sp.spmatrix, y: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Per column: U statistic of ``x`` and two-sided p-value vs ``y`` (non-negative data, zeros tied)."""
    xc, yc = sp.csc_matrix(x, dtype=np.float64), sp.csc_matrix(y, dtype=np.float64)
    xc.eliminate_zeros()
    yc.eliminate_zeros()
    n1, n2, G = xc.shape[0], yc.shape[0], xc.shape[1]
    n = n1 + n2
    gx = np.repeat(np.arange(G), np.diff(xc.indptr))
    gy = np.repeat(np.arange(G), np.diff(yc.indptr))
    genes = np.concatenate([gx, gy])
    vals = np.concatenate([xc.data, yc.data])
    in_x = np.concatenate([np.ones(len(gx), bool), np.zeros(len(gy), bool)])
    order = np.lexsort((vals, genes))
    genes, vals, in_x = genes[order], vals[order], in_x[order]
    nnz = np.bincount(genes, minlength=G)
    start = np.cumsum(nnz) - nnz
    nzero = (n - nnz).astype(np.float64)
    pos = np.arange(len(vals)) - start[genes] + 1 + nzero[genes]
    new_run = np.ones(len(vals), dtype=bool)
    if len(vals) > 1:
        new_run[1:] = (genes[1:] != genes[:-1]) | (vals[1:] != vals[:-1])
    run_id = np.cumsum(new_run) - 1
    run_len = np.bincount(run_id).astype(np.float64)
    avg = (np.bincount(run_id, weights=pos) / run_len)[run_id]
    nzero_x = n1 - np.bincount(genes[in_x], minlength=G)
    R1 = np.bincount(genes[in_x], weights=avg[in_x], minlength=G) + nzero_x * (nzero + 1.0) / 2.0
    tie = np.bincount(genes[new_run], weights=run_len ** 3 - run_len, minlength=G) + (nzero ** 3 - nzero)
    U1 = R1 - n1 * (n1 + 1.0) / 2.0
    U = np.maximum(U1, n1 * n2 - U1)
    s_sq = n1 * n2 / 12.0 * ((n + 1.0) - tie / (n * (n - 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (U - n1 * n2 / 2.0 - 0.5) / np.sqrt(s_sq)
        p = np.clip(2.0 * ndtr(-z), 0.0, 1.0)
    p[s_sq <= 0] = 1.0
    return U1, p


def _geo_bulk(X: sp.csr_matrix) -> np.ndarray:
    return np.expm1(np.asarray(X.mean(axis=0), dtype=np.float64).ravel())


def de_table(expr: Expression) -> dict[str, dict[str, np.ndarray]]:
    """Per perturbation: log2FC, p-value and FDR of every gene vs the control cells (pdex ``ref`` mode)."""
    groups = expr.groups()
    if CONTROL_LABEL not in groups:
        raise ValueError(f"no '{CONTROL_LABEL}' cells")
    ref = expr.X[groups[CONTROL_LABEL]]
    ref_bulk = _geo_bulk(ref)
    out = {}
    for p, rows in groups.items():
        if p == CONTROL_LABEL:
            continue
        g = expr.X[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            lfc = np.log2(_geo_bulk(g) / ref_bulk)
        lfc[np.isnan(lfc)] = 0.0
        _u, pval = mannwhitneyu_sparse(g, ref)
        out[p] = {"lfc": lfc, "p": pval, "fdr": false_discovery_control(pval)}
    return out


def top_de_genes(de: dict[str, np.ndarray], threshold: float = FDR_THRESHOLD) -> np.ndarray:
    """Indices of significant genes, by |log2FC| descending (ties in gene order, as polars' ordinal rank)."""
    sig = np.flatnonzero(de["fdr"] < threshold)
    return sig[np.argsort(-np.abs(de["lfc"][sig]), kind="stable")]


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


def _means(expr: Expression) -> pd.DataFrame:
    groups = expr.groups()
    names = sorted(groups)
    M = np.vstack([np.asarray(expr.X[groups[g]].mean(axis=0), dtype=np.float64).ravel() for g in names])
    return pd.DataFrame(M, index=names, columns=expr.genes)


def mae_pds_scores(real: Expression, pred: Expression) -> tuple[dict[str, float], dict[str, float]]:
    mr, mp = _means(real), _means(pred)
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


def score_local(pred: str | os.PathLike, truth: str | os.PathLike, *,
                de_real: dict[str, dict] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-perturbation DES/PDS/MAE (results.csv layout) and their means."""
    real, pr = Expression.read(truth), Expression.read(pred)
    if not np.array_equal(real.genes, pr.genes):
        raise ValueError("gene order differs between truth and predictions")
    de_r = de_real if de_real is not None else de_table(real)
    des = des_scores(de_r, de_table(pr))
    mae, pds = mae_pds_scores(real, pr)
    perts = sorted(mae)
    table = pd.DataFrame({"perturbation": perts, "overlap_at_N": [des.get(p, 0.0) for p in perts],
                          "mae": [mae[p] for p in perts], "discrimination_score_l1": [pds[p] for p in perts]})
    agg = {"overlap_at_N": float(table["overlap_at_N"].mean()), "mae": float(table["mae"].mean()),
           "discrimination_score_l1": float(table["discrimination_score_l1"].mean())}
    return table, agg
