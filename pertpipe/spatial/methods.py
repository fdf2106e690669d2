"""The methods one slide is imputed by, as a table (:data:`METHOD_RUNNERS`): lrimpute and its ablations
(:data:`LRIMPUTE_VARIANTS`), and the baselines and peers. :func:`run_methods` prepares the slide once, runs the
validation once on visible genes, and calls each configured method's runner with ``heldout`` hidden from them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np

from pertpipe.errors import ConfigError
from pertpipe.spatial import baselines
from pertpipe.spatial.lrimpute import Validation, lrimpute_predict
from pertpipe.spatial.model import (
    SpatialParams,
    columns,
    knn_labels,
)
from pertpipe.spatial.prepare import Latent, Prepared, Priors, hvgs, latent, prepare
from pertpipe.spatial.refine import expected_measurement
from pertpipe.spatial.validation import validate

LRIMPUTE_VARIANTS = {  # method -> changes to SpatialParams / to the validated choices (ablations)
    "lrimpute": {},
    "lrimpute_no_regression": {"regression": "off"},
    "lrimpute_no_residual": {"residual": "off"},
    "lrimpute_no_smooth": {"smooth": "off"},
    "lrimpute_no_offset": {"offset": "off"},
    "lrimpute_no_depth": {"depth": "off"},
    "lrimpute_no_ppi": {"w_ppi": 0.0},
    "lrimpute_no_lt": {"w_lt": 0.0},
    "lrimpute_no_mask": {"mask": False},
    "lrimpute_all_hvg": {"output": "hvg"},
}
BASELINES = ("knn_mean", "depth_only", "hvg_ae", "spage", "tangram", "gimvi")
METHODS = tuple(LRIMPUTE_VARIANTS) + BASELINES


@dataclass
class SlideRun:
    """What a method's runner gets: the prepared slide, the validated choices and latent space (None where no
    configured method needs them), the genes, and the settings."""

    prep: Prepared
    val: Validation | None
    lat: Latent | None
    lr_genes: list[str]
    genes: list[str]
    priors: Priors | None
    params: SpatialParams
    epochs: dict[str, int]
    fits: dict[str, Any] = field(default_factory=dict)  # lrimpute's fits, shared by its ablations

    def lr_cols(self, genes: list[str]) -> list[int]:
        col = {g: j for j, g in enumerate(self.lr_genes)}
        return [col[g] for g in genes]

    def sp_cols(self, genes: list[str]) -> list[int]:
        col = {g: j for j, g in enumerate(self.prep.sp_genes)}
        return [col[g] for g in genes]


def _lrimpute(variant: str):
    def run(r: SlideRun) -> tuple[np.ndarray, dict[str, Any]]:
        return lrimpute_predict(r.prep, r.lat, r.lr_genes, r.genes, r.priors,
                                r.params.with_(**LRIMPUTE_VARIANTS[variant]), r.val, fits=r.fits)
    return run


def _knn_mean(r: SlideRun) -> np.ndarray:
    labels, _ = knn_labels(r.lat.idx_latent if r.lat.idx_latent is not None else r.lat.idx,
                           r.prep.sc_log[:, r.prep.sc_cols(r.lr_genes)], r.prep.sc_counts[:, r.prep.sc_cols(r.lr_genes)])
    return labels[:, r.lr_cols(r.genes)]


def _depth_only(r: SlideRun) -> np.ndarray:
    """What depth alone predicts: each gene at its scRNA mean, measured at the spot's depth."""
    level = np.asarray(r.prep.sc_log[:, r.prep.sc_cols(r.genes)].mean(0), dtype=np.float32).reshape(1, -1)
    return expected_measurement(np.repeat(level, r.prep.x_sp.shape[0], 0), r.prep.library())


def _hvg_ae(r: SlideRun) -> np.ndarray:
    targets = list(r.lr_genes) + hvgs(r.prep, r.params.n_hvg, set(r.lr_genes))
    pred = baselines.hvg_autoencoder(r.prep.x_sc, columns(r.prep.sc_log, r.prep.sc_cols(targets)), r.prep.x_sp,
                                     r.params)
    return pred[:, r.lr_cols(r.genes)]


def _spage(r: SlideRun) -> np.ndarray:
    prep = r.prep
    return baselines.spage(columns(prep.sp_log, r.sp_cols(prep.input_genes)),
                           columns(prep.sc_log, prep.sc_cols(prep.input_genes)), columns(prep.sc_log, prep.sc_cols(r.genes)))


def _tangram(r: SlideRun) -> np.ndarray:
    prep = r.prep
    need = list(dict.fromkeys(list(prep.input_genes) + list(r.genes)))
    return baselines.tangram(prep.sc_log[:, prep.sc_cols(need)], need, prep.sp_log[:, r.sp_cols(prep.input_genes)],
                             prep.input_genes, prep.input_genes, r.genes, epochs=r.epochs["tangram"], seed=r.params.seed)


def _gimvi(r: SlideRun) -> np.ndarray:
    prep = r.prep
    return baselines.gimvi(prep.sc_counts, prep.sc_genes, prep.sp_counts, prep.sp_genes, prep.input_genes, r.genes,
                           epochs=r.epochs["gimvi"], seed=r.params.seed)


# method -> its runner (a prediction, or (prediction, info)); the peers run only where their package is installed
METHOD_RUNNERS: dict[str, Callable[[SlideRun], Any]] = {
    **{m: _lrimpute(m) for m in LRIMPUTE_VARIANTS},
    "knn_mean": _knn_mean, "depth_only": _depth_only, "hvg_ae": _hvg_ae, "spage": _spage, "tangram": _tangram,
    "gimvi": _gimvi,
}
NEEDS_VALIDATION = set(LRIMPUTE_VARIANTS) | {"knn_mean"}  # methods that read the validated latent space


def run_methods(spatial: ad.AnnData, scrna: ad.AnnData, lr_genes: list[str], genes: list[str], priors: Priors | None,
                params: SpatialParams, methods: list[str], *, heldout: list[str] | tuple[str, ...] = (),
                tangram_epochs: int = 300, gimvi_epochs: int = 200) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Predictions (spots x ``genes``, log1p scale for ours) of each method with ``heldout`` hidden from them all.
    The validation (k, residual transfer, smoothing, priors) runs once on visible genes; the ablations switch one of
    its choices off."""
    unknown = [m for m in methods if m not in METHOD_RUNNERS]
    if unknown:
        raise ConfigError(f"spatial.evaluate.methods names '{unknown[0]}'. Fix: use any of {list(METHODS)}")
    prep = prepare(spatial, scrna, heldout, max_input_genes=params.max_input_genes)
    info: dict[str, Any] = {"unavailable": {}}
    val = lat = None
    if NEEDS_VALIDATION & set(methods):  # the peers need neither
        val = validate(prep, params, spatial=spatial, scrna=scrna, lr_genes=lr_genes, priors=priors)
        lat = latent(prep, params, k=val.k, neighbours=val.neighbours)
        info.update(latent=lat.info, validation=val.as_dict())
    run = SlideRun(prep, val, lat, list(lr_genes), list(genes), priors, params,
                   {"tangram": tangram_epochs, "gimvi": gimvi_epochs})
    out: dict[str, np.ndarray] = {}
    for m in methods:
        missing = baselines.peer_missing(m) if m in baselines.PEERS else None
        if missing:
            info["unavailable"][m] = missing
            continue
        res = METHOD_RUNNERS[m](run)
        if isinstance(res, tuple):
            out[m], info[m] = res
        else:
            out[m] = res
    info["n_input_genes"] = len(prep.input_genes)
    return out, info
