"""Baselines of the spatial branch: a plain HVG autoencoder, Tangram and gimVI (peers from PyPI).

Each returns spots x ``genes`` predictions of the held-out/unmeasured genes from the spot's measured input genes
only. Tangram (``tangram-sc``) and gimVI (``scvi-tools``) are imported when called; if absent, the method is
reported as unavailable with the install line, not a traceback.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from pertpipe.spatial.model import SpatialParams, relu_mlp

log = logging.getLogger("pertpipe.spatial")

PEERS = {"tangram": ("tangram", "pip install 'pertpipe[spatial]' or tangram-sc==1.0.4; BSD-3-Clause"),
         "gimvi": ("scvi", "pip install 'pertpipe[spatial]' or scvi-tools==1.4.2; BSD-3-Clause")}


def peer_missing(method: str) -> str | None:
    """None when ``method``'s package imports, else the install hint."""
    mod, hint = PEERS[method]
    return None if importlib.util.find_spec(mod) is not None else f"{mod} is not installed ({hint})"


class HVGAutoencoder(nn.Module):
    def __init__(self, n_in: int, hidden: int, latent: int, n_out: int) -> None:
        super().__init__()
        self.enc = relu_mlp(n_in, hidden, latent)
        self.dec = relu_mlp(latent, hidden, n_out)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.dec(self.enc(x)) - y) ** 2).mean()


def hvg_autoencoder(x_sc_std: np.ndarray, y_sc: np.ndarray, x_sp_std: np.ndarray, params: SpatialParams) -> np.ndarray:
    """A plain autoencoder imputation: shared genes -> HVGs and LR genes, trained on the scRNA cells, applied to
    the spots (no kNN supervision, no LR focus, no priors)."""
    torch.manual_seed(params.seed)
    g = torch.Generator().manual_seed(params.seed + 2)
    model = HVGAutoencoder(x_sc_std.shape[1], params.hidden, params.latent_dim, y_sc.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    x, y = torch.from_numpy(x_sc_std), torch.from_numpy(y_sc)
    for _ in range(params.decoder_epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), params.batch_size):
            b = perm[s:s + params.batch_size]
            loss = model.loss(x[b], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return np.clip(model.dec(model.enc(torch.from_numpy(x_sp_std))).numpy(), 0, None)


def tangram(sc_log: sp.spmatrix | np.ndarray, sc_genes: list[str], sp_log: sp.spmatrix | np.ndarray,
            sp_genes: list[str], train_genes: list[str],
            genes: list[str], *, epochs: int, seed: int) -> np.ndarray:
    """Tangram (cells mode) maps the scRNA cells onto the spots over ``train_genes``; the projected expression of
    ``genes`` is the imputation."""
    import tangram as tg

    ad_sc = ad.AnnData(X=sc_log, var=pd.DataFrame(index=pd.Index(sc_genes)))
    ad_sp = ad.AnnData(X=sp_log, var=pd.DataFrame(index=pd.Index(sp_genes)))
    logging.getLogger("tangram").setLevel(logging.WARNING)
    np.random.seed(seed)  # tangram seeds only when random_state is truthy: seed 0 would draw its start unseeded
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tg.pp_adatas(ad_sc, ad_sp, genes=list(train_genes))
        ad_map = tg.map_cells_to_space(ad_sc, ad_sp, mode="cells", density_prior="rna_count_based",
                                       num_epochs=epochs, device="cpu", random_state=seed, verbose=False)
        ad_ge = tg.project_genes(ad_map, ad_sc)
    low = {v.lower(): j for j, v in enumerate(ad_ge.var_names)}
    x = ad_ge.X.toarray() if sp.issparse(ad_ge.X) else np.asarray(ad_ge.X)
    return np.stack([x[:, low[g.lower()]] if g.lower() in low else np.zeros(len(x)) for g in genes], 1)


def gimvi(sc_counts: sp.spmatrix, sc_genes: list[str], sp_counts: sp.spmatrix, sp_genes: list[str],
          train_genes: list[str], genes: list[str], *, epochs: int, seed: int) -> np.ndarray:
    """gimVI (scvi-tools): a joint model of the scRNA counts (train_genes + genes) and the spatial counts
    (train_genes); imputed normalised expression of ``genes`` in the spots."""
    import scvi
    from scvi.external import GIMVI

    scvi.settings.seed = seed
    logging.getLogger("scvi").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    sc_idx = {g: j for j, g in enumerate(sc_genes)}
    sp_idx = {g: j for j, g in enumerate(sp_genes)}
    seq_genes = list(train_genes) + [g for g in genes if g not in set(train_genes)]
    seq = ad.AnnData(X=sp.csr_matrix(sc_counts)[:, [sc_idx[g] for g in seq_genes]].astype(np.float32),
                     var=pd.DataFrame(index=pd.Index(seq_genes)))
    spa = ad.AnnData(X=sp.csr_matrix(sp_counts)[:, [sp_idx[g] for g in train_genes]].astype(np.float32),
                     var=pd.DataFrame(index=pd.Index(train_genes)))
    keep_sc = np.asarray(seq.X.sum(1)).ravel() > 0
    keep_sp = np.asarray(spa.X.sum(1)).ravel() > 0
    seq, spa_fit = seq[keep_sc].copy(), spa[keep_sp].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GIMVI.setup_anndata(seq)
        GIMVI.setup_anndata(spa_fit)
        model = GIMVI(seq, spa_fit, generative_distributions=["zinb", "nb"], model_library_size=[True, False])
        model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                    logger=False, enable_checkpointing=False)
        _, imputed = model.get_imputed_values(normalized=True)
    out = np.zeros((spa.n_obs, len(genes)), dtype=np.float32)
    col = {g: j for j, g in enumerate(seq_genes)}
    out[keep_sp] = np.asarray(imputed)[:, [col[g] for g in genes]]
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)


def pv_neighbours(sp_x: np.ndarray, sc_x: np.ndarray, k: int, *, n_pv: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """SpaGE's alignment: the shared genes z-scored in each dataset, PRECISE's principal vectors (the SVD of the two
    datasets' principal components' cross-product), both projected on the scRNA side's; each spot's ``k`` nearest
    cells by cosine distance there. Returns (distances spots x cells, neighbour indices spots x k)."""
    zs, zc = _zscore(sp_x), _zscore(sc_x)
    n = int(max(1, min(n_pv, zs.shape[1] - 1, len(zs) - 1, len(zc) - 1)))
    ps = np.linalg.svd(zc - zc.mean(0), full_matrices=False)[2][:n]  # scRNA principal components (rows)
    pt = np.linalg.svd(zs - zs.mean(0), full_matrices=False)[2][:n]  # spatial principal components
    u, _, _ = np.linalg.svd(ps @ pt.T)
    s = u.T @ ps  # the scRNA-side principal vectors
    a, b = zs @ s.T, zc @ s.T
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    k = min(k, len(b))
    dist = 1.0 - a @ b.T  # cosine distance, spots x cells
    return dist, np.argpartition(dist, k - 1, axis=1)[:, :k]


def spage(sp_x: np.ndarray, sc_x: np.ndarray, sc_y: np.ndarray, *, n_pv: int = 30, k: int = 50) -> np.ndarray:
    """SpaGE's method (Abdelaal, Mourragui, Mahfouz & Reinders 2020, Nucleic Acids Res 48:e107; our short
    reimplementation, no package is used): the shared genes z-scored in each dataset; PRECISE's principal vectors
    (the SVD of the two datasets' principal components' cross-product aligns the scRNA and spatial subspaces); both
    datasets projected on the scRNA-side principal vectors; each spot's ``k`` nearest cells by cosine distance
    there; the imputation is their weighted mean expression of the target genes, weights 1 - d / sum(d) over the
    neighbours closer than distance 1, normalised as SpaGE does."""
    dist, nbr = pv_neighbours(sp_x, sc_x, k, n_pv=n_pv)
    y = np.asarray(sc_y, np.float64)
    out = np.zeros((len(dist), y.shape[1]))
    for i in range(len(dist)):
        d = dist[i, nbr[i]]
        close = nbr[i][d < 1]
        dc = d[d < 1]
        if len(close) == 0:
            out[i] = y[nbr[i]].mean(0)
            continue
        w = 1 - dc / dc.sum() if dc.sum() > 0 else np.ones(len(dc))
        w = w / (len(w) - 1) if len(w) > 1 else np.ones(1)
        out[i] = w @ y[close]
    return np.clip(out, 0, None).astype(np.float32)
