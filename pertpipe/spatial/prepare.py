"""Preparing one slide and its reference for a set of held-out genes: :func:`prepare` drops a held-out gene from
every spatial input before anything is fitted (the k-fold evaluation and the pipeline's rules all go through it), the
latent space and its neighbours (:func:`latent`), cell-type fractions per spot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from pertpipe.spatial import baselines
from pertpipe.spatial.model import (
    SpatialParams,
    col_variance,
    columns,
    fit_latent,
    log_normalize,
    match_cells,
    standardize,
)


@dataclass
class Priors:
    """PPI Laplacian over ``genes`` (the LR genes) and a ligand -> target prior (``ligands`` x ``targets``)."""

    genes: list[str]
    laplacian: np.ndarray | None
    ligands: list[str]
    targets: list[str]
    prior: np.ndarray | None


@dataclass
class Prepared:
    """A slide's matrices with the held-out genes removed from every spatial input."""

    heldout: list[str]
    input_genes: list[str]  # shared genes the latent space reads
    x_sp: np.ndarray  # spots x input genes, standardised
    x_sc: np.ndarray  # cells x input genes, standardised
    sp_genes: list[str]  # spatial genes still visible (all minus held-out)
    sp_log: sp.csr_matrix  # spots x sp_genes, log1p normalised over the visible genes (sparse)
    sp_counts: sp.csr_matrix
    sc_genes: list[str]
    sc_log: sp.csr_matrix  # cells x scRNA genes (sparse)
    sc_counts: sp.csr_matrix
    cell_types: np.ndarray
    coords: np.ndarray | None = None  # spots x 2 (obsm['spatial'])
    extra: dict[str, Any] = field(default_factory=dict)

    def sc_cols(self, genes: list[str]) -> list[int]:
        idx = {g: j for j, g in enumerate(self.sc_genes)}
        return [idx[g] for g in genes]

    def library(self) -> np.ndarray:
        """Each spot's total counts over its visible genes (its depth; 1 where a spot has none)."""
        lib = np.asarray(self.sp_counts.sum(1), dtype=np.float64).ravel()
        return np.where(lib > 0, lib, 1.0)


def prepare(spatial: ad.AnnData, scrna: ad.AnnData, heldout: list[str] | tuple[str, ...] = (), *,
            max_input_genes: int | None = None) -> Prepared:
    """Remove ``heldout`` from the spatial data (before normalising), then build the standardised shared inputs
    (at most ``max_input_genes`` shared genes: the most variable in the scRNA-seq; only these are densified)."""
    held = set(heldout)
    visible = [g for g in spatial.var_names if g not in held]
    sp_counts = sp.csr_matrix(spatial[:, visible].X, dtype=np.float32)
    sp_log = log_normalize(sp_counts)
    sc_counts = sp.csr_matrix(scrna.X, dtype=np.float32)
    sc_log = log_normalize(sc_counts)
    sc_genes = list(scrna.var_names)
    sc_set = set(sc_genes)
    input_genes = [g for g in visible if g in sc_set]
    if len(input_genes) < 5:
        from pertpipe.errors import ContractError

        raise ContractError("<spatial pair>", "shared genes", f"only {len(input_genes)} genes are in both the spatial "
                            "data and the scRNA-seq", "check that both use the same gene symbols and species")
    sp_col = {g: j for j, g in enumerate(visible)}
    sc_col = {g: j for j, g in enumerate(sc_genes)}
    if max_input_genes and len(input_genes) > max_input_genes:
        var = col_variance(sc_log[:, [sc_col[g] for g in input_genes]])
        keep = np.sort(np.argsort(-var, kind="stable")[:max_input_genes])
        input_genes = [input_genes[j] for j in keep]
    x_sp = standardize(columns(sp_log, [sp_col[g] for g in input_genes]))
    x_sc = standardize(columns(sc_log, [sc_col[g] for g in input_genes]))
    coords = np.asarray(spatial.obsm["spatial"], dtype=np.float64) if "spatial" in spatial.obsm else None
    return Prepared(sorted(held), input_genes, x_sp, x_sc, visible, sp_log, sp_counts, sc_genes, sc_log, sc_counts,
                    np.asarray(scrna.obs["cell_type"]).astype(str), coords)


def hvgs(prep: Prepared, n: int, exclude: set[str]) -> list[str]:
    var = col_variance(prep.sc_log)
    order = np.argsort(-var, kind="stable")
    return [prep.sc_genes[j] for j in order if prep.sc_genes[j] not in exclude and var[j] > 0][:n]


@dataclass
class Latent:
    z_sp: np.ndarray
    z_sc: np.ndarray
    idx: np.ndarray  # spots x k: matched cells (the validated neighbour set)
    info: dict[str, Any]
    idx_latent: np.ndarray | None = None  # the latent space's own k nearest cells (the knn_mean baseline)


def neighbour_set(prep: Prepared, idx_latent: np.ndarray, k: int, kind: str) -> np.ndarray:
    """Each spot's matched cells: the latent space's (``latent``), SpaGE's principal-vector kNN over the standardised
    shared genes (``pv``), or both sets together (``both``, 2k cells)."""
    if kind == "latent":
        return idx_latent
    _, pv = baselines.pv_neighbours(prep.x_sp, prep.x_sc, k)
    return pv if kind == "pv" else np.concatenate([idx_latent, pv], 1)


def latent(prep: Prepared, params: SpatialParams, *, k: int | None = None, neighbours: str = "latent",
           checkpoint: str | None = None) -> Latent:
    """The shared latent space and each spot's ``k`` matched cells (default: ``params.k``, or ``align_k`` when it is
    auto and no validation chose one) from the validated ``neighbours`` set; with ``checkpoint`` the fit
    checkpoints and resumes through the shared loop."""
    k = int(k if k is not None else (params.k if params.k != "auto" else params.align_k))
    z_sp, z_sc, info = fit_latent(prep.x_sp, prep.x_sc, params, checkpoint=checkpoint)
    info.update({"k": k, "neighbours": neighbours})
    own, score = match_cells(z_sp, z_sc, k, metric=params.match)
    idx = neighbour_set(prep, own, k, neighbours)
    info["median_match_score"] = float(np.median(score))
    info["n_distinct_matched_cells"] = int(len(np.unique(idx)))
    return Latent(z_sp, z_sc, idx, info, own)


def cell_type_fractions(prep: Prepared, lat: Latent) -> tuple[np.ndarray, list[str]]:
    """Per spot: fraction of its matched cells of each type (for the communication expectation; not a
    deconvolution)."""
    types = sorted(set(prep.cell_types))
    code = {t: i for i, t in enumerate(types)}
    ct = np.vectorize(code.get)(prep.cell_types[lat.idx])
    frac = np.stack([(ct == i).mean(1) for i in range(len(types))], 1)
    return frac, types
