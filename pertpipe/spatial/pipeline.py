"""One slide through the branch: prepare matrices for a set of held-out genes, fit the latent space and the
pseudo-labels, run lrimpute (and its ablations) and the baselines. The k-fold evaluation and the pipeline's
``knn_labels`` / ``train_lrimpute`` / ``impute`` rules all go through here, so a held-out gene is removed in one
place: :func:`prepare` drops it from every spatial input before anything is fitted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from pertpipe.spatial import baselines
from pertpipe.spatial.model import (ImputeInputs, SpatialParams, col_variance, columns, fit_latent, fit_lrimpute, knn_labels,
                                    log_normalize, match_cells, predict_lrimpute, standardize)

log = logging.getLogger("pertpipe.spatial")

LRIMPUTE_VARIANTS = {  # method -> changes to SpatialParams (ablations)
    "lrimpute": {},
    "lrimpute_no_ppi": {"w_ppi": 0.0},
    "lrimpute_no_lt": {"w_lt": 0.0},
    "lrimpute_no_mask": {"mask": False},
    "lrimpute_all_hvg": {"output": "hvg"},
}
BASELINES = ("knn_mean", "hvg_ae", "tangram", "gimvi")
METHODS = tuple(LRIMPUTE_VARIANTS) + BASELINES


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
    extra: dict[str, Any] = field(default_factory=dict)

    def sc_cols(self, genes: list[str]) -> list[int]:
        idx = {g: j for j, g in enumerate(self.sc_genes)}
        return [idx[g] for g in genes]


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
    return Prepared(sorted(held), input_genes, x_sp, x_sc, visible, sp_log, sp_counts, sc_genes, sc_log, sc_counts,
                    np.asarray(scrna.obs["cell_type"]).astype(str))


def hvgs(prep: Prepared, n: int, exclude: set[str]) -> list[str]:
    var = col_variance(prep.sc_log)
    order = np.argsort(-var, kind="stable")
    return [prep.sc_genes[j] for j in order if prep.sc_genes[j] not in exclude and var[j] > 0][:n]


@dataclass
class Latent:
    z_sp: np.ndarray
    z_sc: np.ndarray
    idx: np.ndarray  # spots x k: matched cells
    info: dict[str, Any]


def choose_k(prep: Prepared, params: SpatialParams, *, checkpoint: str | None = None) -> tuple[int, dict[str, float]]:
    """``k: auto``: hold a random ``val_fraction`` of the visible shared genes out of a second latent fit and take
    the k whose kNN mean predicts them best (median PCC across spots). Only visible genes are used, so a k-fold's
    held-out genes never inform the choice."""
    from pertpipe.spatial.metrics import pcc

    rng = np.random.default_rng(params.seed + 7)
    n = len(prep.input_genes)
    n_val = max(1, min(n - 5, int(round(params.val_fraction * n))))
    if n_val < 1 or n - n_val < 5:
        return params.align_k, {}
    val = np.sort(rng.choice(n, n_val, replace=False))
    keep = np.setdiff1d(np.arange(n), val)
    z_sp, z_sc, _ = fit_latent(prep.x_sp[:, keep], prep.x_sc[:, keep], params, checkpoint=checkpoint)
    val_genes = [prep.input_genes[j] for j in val]
    y = columns(prep.sc_log, prep.sc_cols(val_genes))
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    truth = columns(prep.sp_log, [sp_col[g] for g in val_genes])
    scores = {}
    for k in sorted({min(k, len(z_sc)) for k in params.k_candidates}):
        idx, _ = match_cells(z_sp, z_sc, k, metric=params.match)
        pred, _ = knn_labels(idx, y, y)
        scores[str(k)] = float(np.median([pcc(pred[:, j], truth[:, j]) for j in range(len(val))]))
    best = max(scores, key=lambda k_: (scores[k_], -int(k_)))
    return int(best), scores


def latent(prep: Prepared, params: SpatialParams, *, checkpoint: str | None = None) -> Latent:
    """The shared latent space and each spot's k matched cells; with ``checkpoint`` both latent fits (the auto-k
    validation fit and the final one) checkpoint and resume through the shared loop."""
    from pertpipe.models.training import stage_checkpoint

    k, k_scores = ((params.k, {}) if params.k != "auto"
                   else choose_k(prep, params, checkpoint=stage_checkpoint(checkpoint, "auto_k")))
    z_sp, z_sc, info = fit_latent(prep.x_sp, prep.x_sc, params, checkpoint=checkpoint)
    info.update({"k": int(k), "k_validation_pcc": k_scores})
    idx, score = match_cells(z_sp, z_sc, k, metric=params.match)
    info["median_match_score"] = float(np.median(score))
    info["n_distinct_matched_cells"] = int(len(np.unique(idx)))
    return Latent(z_sp, z_sc, idx, info)


def cell_type_fractions(prep: Prepared, lat: Latent) -> tuple[np.ndarray, list[str]]:
    """Per spot: fraction of its matched cells of each type (for the communication expectation; not a
    deconvolution)."""
    types = sorted(set(prep.cell_types))
    code = {t: i for i, t in enumerate(types)}
    ct = np.vectorize(code.get)(prep.cell_types[lat.idx])
    frac = np.stack([(ct == i).mean(1) for i in range(len(types))], 1)
    return frac, types


def impute_inputs(prep: Prepared, lat: Latent, lr_genes: list[str], priors: Priors | None,
                  params: SpatialParams) -> ImputeInputs:
    """Pseudo-labels, mask, the spot's own measured LR genes and the prior matrices, for the visible genes only."""
    out_genes = list(lr_genes)
    if params.output == "hvg":
        out_genes += hvgs(prep, params.n_hvg, set(lr_genes))
    labels, mask = knn_labels(lat.idx, prep.sc_log[:, prep.sc_cols(out_genes)], prep.sc_counts[:, prep.sc_cols(out_genes)])
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    obs_genes = [g for g in out_genes if g in sp_col]  # held-out genes are not in sp_genes
    inp = ImputeInputs(lat.z_sp, labels, mask, out_genes, obs=columns(prep.sp_log, [sp_col[g] for g in obs_genes]),
                       obs_genes=obs_genes)
    if priors is not None:
        if priors.laplacian is not None:
            lap = np.zeros((len(out_genes), len(out_genes)), dtype=np.float32)
            n = len(priors.genes)
            if priors.genes != list(lr_genes):
                from pertpipe.errors import ContractError

                raise ContractError("priors.npz", "genes", "the priors were built for another LR gene list",
                                    "re-run the spatial_priors rule after lr_genes changed")
            lap[:n, :n] = priors.laplacian
            inp.laplacian = lap
        if priors.prior is not None and priors.ligands:
            tcols = [j for j, t in enumerate(priors.targets) if t in sp_col]  # held-out targets are dropped here
            mass = priors.prior[:, tcols].sum(0)
            tcols = [tcols[j] for j in np.argsort(-mass, kind="stable")[:params.max_targets] if mass[j] > 0]
            inp.prior = priors.prior[:, tcols]
            inp.ligands = priors.ligands
            inp.targets = columns(prep.sp_log, [sp_col[priors.targets[j]] for j in tcols])
    return inp


def run_methods(spatial: ad.AnnData, scrna: ad.AnnData, lr_genes: list[str], genes: list[str], priors: Priors | None,
                params: SpatialParams, methods: list[str], *, heldout: list[str] | tuple[str, ...] = (),
                tangram_epochs: int = 300, gimvi_epochs: int = 200) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Predictions (spots x ``genes``, log1p scale for ours) of each method with ``heldout`` hidden from them all."""
    prep = prepare(spatial, scrna, heldout, max_input_genes=params.max_input_genes)
    lat = latent(prep, params)
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"latent": lat.info, "unavailable": {}}
    lr_col = {g: j for j, g in enumerate(lr_genes)}
    for m in methods:
        if m in LRIMPUTE_VARIANTS:
            p = params.with_(**LRIMPUTE_VARIANTS[m])
            inp = impute_inputs(prep, lat, lr_genes, priors, p)
            model, tinfo = fit_lrimpute(inp, p)
            pred = predict_lrimpute(model, lat.z_sp, inp.labels, inp.mask if p.mask else None)
            col = {g: j for j, g in enumerate(inp.out_genes)}
            out[m] = pred[:, [col[g] for g in genes]]
            info[m] = tinfo
        elif m == "knn_mean":
            labels, _ = knn_labels(lat.idx, prep.sc_log[:, prep.sc_cols(lr_genes)], prep.sc_counts[:, prep.sc_cols(lr_genes)])
            out[m] = labels[:, [lr_col[g] for g in genes]]
        elif m == "hvg_ae":
            targets = list(lr_genes) + hvgs(prep, params.n_hvg, set(lr_genes))
            y = columns(prep.sc_log, prep.sc_cols(targets))
            pred = baselines.hvg_autoencoder(prep.x_sc, y, prep.x_sp, params)
            out[m] = pred[:, [lr_col[g] for g in genes]]
        elif m in baselines.PEERS:
            missing = baselines.peer_missing(m)
            if missing:
                info["unavailable"][m] = missing
                continue
            if m == "tangram":
                need = list(dict.fromkeys(list(prep.input_genes) + list(genes)))
                sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
                out[m] = baselines.tangram(prep.sc_log[:, prep.sc_cols(need)], need,
                                           prep.sp_log[:, [sp_col[g] for g in prep.input_genes]], prep.input_genes,
                                           prep.input_genes, genes, epochs=tangram_epochs, seed=params.seed)
            else:
                out[m] = baselines.gimvi(prep.sc_counts, prep.sc_genes, prep.sp_counts, prep.sp_genes,
                                         prep.input_genes, genes, epochs=gimvi_epochs, seed=params.seed)
        else:
            from pertpipe.errors import ConfigError

            raise ConfigError(f"spatial.evaluate.methods names '{m}'. Fix: use any of {list(METHODS)}")
    info["n_input_genes"] = len(prep.input_genes)
    return out, info
