"""The DE test engine behind the DES metric, written to agree with pdex in ``ref`` mode on log1p data: pseudobulks
``expm1(mean(X))``, ``log2(group / ref)`` (0/0 -> 0), a two-sided Mann-Whitney U test (asymptotic, tie-corrected,
continuity-corrected) and Benjamini-Hochberg FDR per perturbation (:func:`de_table`, :func:`top_de_genes`).

The U test runs on the non-zero entries only (all zeros of a gene form one tie block): the control cells are sorted
once per gene (:class:`ReferenceIndex`) and each perturbation is placed among them with ``searchsorted``, vectorised
over all genes, which is where the speed comes from. A scored file is an :class:`Expression`, read one perturbation's
rows at a time."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import ndtr
from scipy.stats import false_discovery_control

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import H5adReader

FDR_THRESHOLD = 0.05


@dataclass
class Expression:
    """A scored file: its rows (read from disk group by group, or an in-memory CSR), labels and genes.

    :meth:`read` keeps only the labels in memory; every metric reads one perturbation's rows at a time
    (``X[rows]``), so the scorer's memory follows the largest group and the control reference, not the file.
    """

    X: Any  # sp.csr_matrix or pertpipe.core.h5io.RowReader
    labels: np.ndarray
    genes: np.ndarray
    _means: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Expression:
        from pertpipe.core.h5io import RowReader

        with H5adReader(path) as r:
            labels = r.obs["target_gene"].astype(str).to_numpy()
            genes = np.asarray(r.var_names, dtype=str)
        return cls(RowReader(path), labels, genes)

    def rows(self, idx: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """The given rows: an ndarray for a dense-stored file (predictions), else a CSR."""
        if getattr(self.X, "encoding", None) == "array":
            return self.X.dense(idx)
        return self.X[idx]

    def groups(self) -> dict[str, np.ndarray]:
        uniq, inv = np.unique(self.labels, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        return {u: order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniq)}


def _tie_sum(counts: np.ndarray) -> np.ndarray:
    return counts ** 3 - counts


#: entries (cells x genes) of one gene block of a group's test: bounds the temporaries whatever the group size
BLOCK_ENTRIES = 1 << 21
#: entries (cells x genes) of one chunk of control rows read to build the reference (two passes)
REF_CHUNK_ENTRIES = 1 << 24


class ReferenceIndex:
    """The control cells of a Mann-Whitney U comparison, sorted once per gene and reused for every group.

    Against a group x (non-negative, zeros tied), per gene:
    ``U1 = sum_i [#ref < x_i + 0.5 #ref == x_i]``; the tie term of the pooled sample is
    ``T_ref + T_x + sum_v 3 a_v b_v (a_v + b_v)`` over values v shared by x (a_v) and the reference (b_v).

    Memory: the reference's non-zero values (float32 for float32 data), sorted by (gene, value), and per gene
    where its values start; every computation runs on a block of genes (``block_entries`` cells x genes at a
    time), so temporaries do not grow with the group or the reference. :meth:`from_chunks` builds it from row
    chunks read twice (counts, then values), so the whole reference is never held as a matrix; it also keeps
    the reference's column sums (``col_sum``) for its pseudobulk.
    """

    def __init__(self, y: Any, block_entries: int = BLOCK_ENTRIES) -> None:
        """From an in-memory reference (ndarray or sparse); :meth:`from_chunks` for one read from disk."""
        self._build(lambda: iter([y]), block_entries)

    @classmethod
    def from_chunks(cls, chunks: Callable[[], Iterator[Any]], block_entries: int = BLOCK_ENTRIES) -> ReferenceIndex:
        """``chunks()`` yields the reference's rows as consecutive blocks (ndarray or sparse); it is called twice."""
        index = cls.__new__(cls)
        index._build(chunks, block_entries)
        return index

    @staticmethod
    def _csr(block: Any, dtype: np.dtype | None) -> sp.csr_matrix:
        from pertpipe.core.h5io import dense_to_csr

        if isinstance(block, np.ndarray):
            out = dense_to_csr(block)
        else:
            out = sp.csr_matrix(block, copy=True)
            out.eliminate_zeros()
        return out if dtype is None else out.astype(dtype, copy=False)

    def _build(self, chunks: Callable[[], Iterator[Any]], block_entries: int) -> None:
        self.block_entries = int(block_entries)
        nnz, col_sum, n2, G, dtype = None, None, 0, None, None
        for block in chunks():  # pass 1: shape, dtype, non-zeros per gene, column sums
            c = self._csr(block, None)
            if G is None:
                G = c.shape[1]
                nnz, col_sum = np.zeros(G, np.int64), np.zeros(G)
                dtype = np.result_type(c.dtype, np.float32)  # float32 stays float32; float64 stays exact
            elif c.shape[1] != G:
                raise ValueError(f"reference chunk has {c.shape[1]} genes, the first {G}")
            n2 += c.shape[0]
            nnz += np.bincount(c.indices, minlength=G)
            col_sum += np.bincount(c.indices, weights=c.data.astype(np.float64), minlength=G)
        if G is None:
            raise ValueError("empty reference: no chunks")
        self.n2, self.G, self.col_sum = n2, G, col_sum
        self.gene_start = np.concatenate([[0], np.cumsum(nnz)])  # gene j's values: vals[start[j]:start[j+1]]
        self.vals = np.empty(int(self.gene_start[-1]), dtype)
        fill = self.gene_start[:-1].copy()
        for block in chunks():  # pass 2: each value into its gene's slot
            c = self._csr(block, dtype)
            order = np.argsort(c.indices, kind="stable")
            g = c.indices[order]
            counts = np.bincount(g, minlength=G)
            first = np.cumsum(counts) - counts
            self.vals[fill[g] + (np.arange(len(g)) - first[g])] = c.data[order]
            fill += counts
        self.tie = np.zeros(G)
        for g0, g1 in self._blocks(max(self.n2, 1)):  # sort each gene's values; ties
            lo, hi = int(self.gene_start[g0]), int(self.gene_start[g1])
            g = np.repeat(np.arange(g0, g1, dtype=np.int32), nnz[g0:g1])
            seg = self.vals[lo:hi]
            v = seg[np.lexsort((seg, g))]
            self.vals[lo:hi] = v
            run = np.ones(len(v), bool)
            run[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
            run_len = np.diff(np.append(np.flatnonzero(run), len(v))).astype(np.float64)
            self.tie += np.bincount(g[run], weights=_tie_sum(run_len), minlength=G)
        self.nzero = (self.n2 - nnz).astype(np.float64)
        self.tie += _tie_sum(self.nzero)
        self.vmax = float(self.vals.max()) if self.vals.size else 0.0

    def _blocks(self, n_rows: int):
        width = max(1, min(self.G, self.block_entries // max(n_rows, 1)))
        for g0 in range(0, self.G, width):
            yield g0, min(self.G, g0 + width)

    def test(self, x: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
        """U statistic of ``x`` and the two-sided asymptotic p-value (tie and continuity corrected), per gene."""
        x = x if isinstance(x, np.ndarray) else sp.csr_matrix(x)
        n1, n2, G = x.shape[0], self.n2, self.G
        if x.shape[1] != G:
            raise ValueError(f"group has {x.shape[1]} genes, the reference {G}")
        U1, tie = np.empty(G), np.empty(G)
        for g0, g1 in self._blocks(max(n1, n2)):
            U1[g0:g1], tie[g0:g1] = self._block(sp.csc_matrix(x[:, g0:g1], dtype=np.float64), g0, g1)
        n = n1 + n2
        U = np.maximum(U1, n1 * n2 - U1)
        s_sq = n1 * n2 / 12.0 * ((n + 1.0) - tie / (n * (n - 1.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (U - n1 * n2 / 2.0 - 0.5) / np.sqrt(s_sq)
            p = np.clip(2.0 * ndtr(-z), 0.0, 1.0)
        p[s_sq <= 0] = 1.0
        return U1, p

    def _block(self, xc: sp.csc_matrix, g0: int, g1: int) -> tuple[np.ndarray, np.ndarray]:
        """U1 and the pooled tie term of genes g0..g1-1 (``xc``: the group's columns g0..g1-1)."""
        xc.eliminate_zeros()
        n1, B = xc.shape[0], g1 - g0
        lo, hi = int(self.gene_start[g0]), int(self.gene_start[g1])
        ref_g = np.repeat(np.arange(B), np.diff(self.gene_start[g0:g1 + 1]))
        ref_v = self.vals[lo:hi].astype(np.float64)
        gx = np.repeat(np.arange(B), np.diff(xc.indptr))
        vx = xc.data
        scale = 2.0 * max(self.vmax, float(vx.max()) if vx.size else 0.0) + 2.0  # (gene, value) keys stay ordered
        ref_keys = ref_g * scale + ref_v
        qk = gx * scale + vx
        order = np.argsort(qk, kind="stable")
        qk, gx, vx = qk[order], gx[order], vx[order]
        left = np.searchsorted(ref_keys, qk, side="left")
        less = left - (self.gene_start[g0:g1][gx] - lo)
        equal = np.searchsorted(ref_keys, qk, side="right") - left
        nzero_ref = self.nzero[g0:g1]
        nzero_x = (n1 - np.bincount(gx, minlength=B)).astype(np.float64)
        U1 = np.bincount(gx, weights=nzero_ref[gx] + less + 0.5 * equal, minlength=B) + 0.5 * nzero_x * nzero_ref
        run = np.ones(len(vx), bool)
        if len(vx) > 1:
            run[1:] = (gx[1:] != gx[:-1]) | (vx[1:] != vx[:-1])
        starts = np.flatnonzero(run)
        a = np.diff(np.append(starts, len(vx))).astype(np.float64)
        b = equal[starts].astype(np.float64)
        tie = (self.tie[g0:g1] + np.bincount(gx[starts], weights=_tie_sum(a) + 3 * a * b * (a + b), minlength=B)
               + _tie_sum(nzero_x) + 3 * nzero_x * nzero_ref * (nzero_x + nzero_ref))
        return U1, tie


def mannwhitneyu_sparse(x: sp.spmatrix, y: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Per column: U statistic of ``x`` and two-sided p-value vs ``y`` (non-negative data, zeros tied)."""
    return ReferenceIndex(y).test(x)


def col_mean(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    if isinstance(X, np.ndarray):
        return X.mean(axis=0, dtype=np.float64)
    return np.asarray(X.mean(axis=0), dtype=np.float64).ravel()


def _geo_bulk(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.expm1(col_mean(X))


def de_table(expr: Expression) -> dict[str, dict[str, Any]]:
    """Per perturbation, every gene vs the control cells as pdex's ``ref`` mode computes it: ``lfc`` (log2 fold
    change of the pseudobulks, 0/0 -> 0), ``p``, ``fdr``, the U statistic ``u``, the pseudobulks ``mean`` and
    ``ref_mean`` (``expm1`` of the mean of X) and the cell counts ``n`` and ``n_ref``."""
    groups = expr.groups()
    if CONTROL_LABEL not in groups:
        raise ValueError(f"no '{CONTROL_LABEL}' cells")
    ref_rows = groups[CONTROL_LABEL]
    step = max(1, REF_CHUNK_ENTRIES // max(len(expr.genes), 1))
    index = ReferenceIndex.from_chunks(lambda: (expr.rows(ref_rows[i:i + step]) for i in range(0, len(ref_rows), step)))
    ref_bulk = np.expm1(index.col_sum / index.n2)
    out = {}
    for p, rows in groups.items():
        if p == CONTROL_LABEL:
            continue
        g = expr.rows(rows)
        bulk = _geo_bulk(g)
        with np.errstate(divide="ignore", invalid="ignore"):
            lfc = np.log2(bulk / ref_bulk)
        lfc[np.isnan(lfc)] = 0.0
        u, pval = index.test(g)
        out[p] = {"lfc": lfc, "p": pval, "fdr": false_discovery_control(pval), "u": u, "mean": bulk,
                  "ref_mean": ref_bulk, "n": len(rows), "n_ref": index.n2}
    return out


def de_frame(de: dict[str, dict[str, Any]], genes: np.ndarray) -> pd.DataFrame:
    """:func:`de_table` in pdex's long layout (cell-eval's ``real_de.csv`` / ``pred_de.csv``): one row per
    (target, gene), targets sorted, genes in file order."""
    perts = sorted(de)
    G = len(genes)
    cat = {k: np.concatenate([de[p][k] for p in perts]) if perts else np.zeros(0)
           for k in ("mean", "ref_mean", "lfc", "p", "u", "fdr")}
    with np.errstate(divide="ignore", invalid="ignore"):
        pc = (cat["mean"] - cat["ref_mean"]) / cat["ref_mean"]
    pc[np.isnan(pc)] = 0.0
    return pd.DataFrame({
        "target": np.repeat(np.asarray(perts, dtype=object), G),
        "feature": np.tile(np.asarray(genes, dtype=object), len(perts)),
        "target_mean": cat["mean"], "ref_mean": cat["ref_mean"],
        "target_membership": np.repeat([de[p]["n"] for p in perts], G).astype(np.int64),
        "ref_membership": np.repeat([de[p]["n_ref"] for p in perts], G).astype(np.int64),
        "log2_fold_change": cat["lfc"], "percent_change": pc, "p_value": cat["p"], "statistic": cat["u"],
        "fdr": cat["fdr"]})


def top_de_genes(de: dict[str, np.ndarray], threshold: float = FDR_THRESHOLD) -> np.ndarray:
    """Indices of significant genes, by |log2FC| descending (ties in gene order, as polars' ordinal rank)."""
    sig = np.flatnonzero(de["fdr"] < threshold)
    return sig[np.argsort(-np.abs(de["lfc"][sig]), kind="stable")]
