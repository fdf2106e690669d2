"""lrimpute itself: the inputs it is fitted on (:func:`impute_inputs`), its prediction for a set of genes
(:func:`lrimpute_predict`) and the validated refinements applied to it (:func:`smooth_and_mask`), by the choices
:class:`Validation` records (:func:`pertpipe.spatial.validation.validate` makes them on visible genes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe.spatial.model import (
    ImputeInputs,
    SpatialParams,
    columns,
    fit_lrimpute,
    knn_labels,
    predict_lrimpute,
)
from pertpipe.spatial.prepare import Latent, Prepared, Priors, hvgs
from pertpipe.spatial.refine import (
    blend_regression,
    expected_measurement,
    expression_regression,
    residual_transfer,
    shift_up,
    smooth_spots,
    spot_neighbours,
)


@dataclass
class Validation:
    """What the slide's validation genes chose: k, the neighbour set, the residual transfer's strength and ridge size,
    the expression regression's blend weight and ridge size, the spatial smoothing weight, and which priors help; ``scores`` holds the median PCC of every candidate."""

    k: int
    strength: float = 0.0
    alpha: float = 1.0
    smooth: float = 0.0
    ppi: bool = True
    lt: bool = True
    genes: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    neighbours: str = "latent"  # latent, pv (SpaGE's principal-vector kNN) or both
    regression: float = 0.0  # blend weight of the expression regression (0 = off)
    regression_alpha: float = 100.0
    offset: float = 0.0  # the output shifted up by this multiple of its mean across spots (0 = off)
    depth: bool = False  # the output turned into what the slide would measure at each spot's depth

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "neighbours": self.neighbours, "residual_strength": self.strength, "residual_alpha": self.alpha,
                "regression_weight": self.regression, "regression_alpha": self.regression_alpha,
                "smooth": self.smooth, "offset": self.offset, "depth": self.depth, "ppi": self.ppi, "ligand_target": self.lt, "n_validation_genes": len(self.genes),
                "scores": self.scores}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Validation:
        return cls(int(d["k"]), float(d["residual_strength"]), float(d["residual_alpha"]), float(d["smooth"]),
                   bool(d["ppi"]), bool(d["ligand_target"]), [], dict(d.get("scores") or {}),
                   str(d.get("neighbours", "latent")), float(d.get("regression_weight", 0.0)),
                   float(d.get("regression_alpha", 100.0)), float(d.get("offset", 0.0)), bool(d.get("depth", False)))


def impute_inputs(prep: Prepared, lat: Latent, lr_genes: list[str], priors: Priors | None,
                  params: SpatialParams, val: Validation | None = None) -> ImputeInputs:
    """Pseudo-labels (the kNN mean, plus the validated residual transfer of what the spot measures, blended with the
    validated expression regression), mask, the
    spot's own measured LR genes and the prior matrices the validation kept, for the visible genes only."""
    out_genes = list(lr_genes)
    if params.output == "hvg":
        out_genes += hvgs(prep, params.n_hvg, set(lr_genes))
    labels, mask = knn_labels(lat.idx, prep.sc_log[:, prep.sc_cols(out_genes)], prep.sc_counts[:, prep.sc_cols(out_genes)])
    if val is not None and val.strength > 0 and params.residual != "off":
        labels = np.clip(labels + val.strength * residual_transfer(prep, lat.idx, prep.input_genes, out_genes,
                                                                   val.alpha), 0, None).astype(np.float32)
    if val is not None and val.regression > 0 and params.regression != "off":
        labels = blend_regression(labels, expression_regression(prep, out_genes, val.regression_alpha), val.regression)
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    obs_genes = [g for g in out_genes if g in sp_col]  # held-out genes are not in sp_genes
    inp = ImputeInputs(lat.z_sp, labels, mask, out_genes, obs=columns(prep.sp_log, [sp_col[g] for g in obs_genes]),
                       obs_genes=obs_genes)
    if priors is not None:
        if priors.laplacian is not None and (val is None or val.ppi):
            lap = np.zeros((len(out_genes), len(out_genes)), dtype=np.float32)
            n = len(priors.genes)
            if priors.genes != list(lr_genes):
                from pertpipe.errors import ContractError

                raise ContractError("priors.npz", "genes", "the priors were built for another LR gene list",
                                    "re-run the spatial_priors rule after lr_genes changed")
            lap[:n, :n] = priors.laplacian
            inp.laplacian = lap
        if priors.prior is not None and priors.ligands and (val is None or val.lt):
            tcols = [j for j, t in enumerate(priors.targets) if t in sp_col]  # held-out targets are dropped here
            mass = priors.prior[:, tcols].sum(0)
            tcols = [tcols[j] for j in np.argsort(-mass, kind="stable")[:params.max_targets] if mass[j] > 0]
            inp.prior = priors.prior[:, tcols]
            inp.ligands = priors.ligands
            inp.targets = columns(prep.sp_log, [sp_col[priors.targets[j]] for j in tcols])
    return inp


def lrimpute_predict(prep: Prepared, lat: Latent, lr_genes: list[str], genes: list[str], priors: Priors | None,
                     params: SpatialParams, val: Validation, *, fits: dict[str, Any] | None = None
                     ) -> tuple[np.ndarray, dict[str, Any]]:
    """lrimpute fitted and applied on the slide (spots x ``genes``): pseudo-labels, the decoder, the mask, then the
    validated spatial smoothing, depth step and offset. With ``fits`` (a dict kept across calls), variants that differ
    only in what follows the decoder (smoothing, depth step, offset) share one decoder fit."""
    key = repr(params.with_(smooth="auto", offset="auto", depth="auto",  # what the decoder sees: a step validation left off is off
                            residual="off" if val.strength == 0 else params.residual,
                            regression="off" if val.regression == 0 else params.regression))
    if fits is not None and key in fits:
        pred, mask, out_genes, tinfo = fits[key]
    else:
        inp = impute_inputs(prep, lat, lr_genes, priors, params, val)
        model, tinfo = fit_lrimpute(inp, params)
        pred = predict_lrimpute(model, lat.z_sp, inp.labels, inp.mask if params.mask else None)
        mask, out_genes = inp.mask, inp.out_genes
        if fits is not None:
            fits[key] = (pred, mask, out_genes, tinfo)
    cols = [{g: j for j, g in enumerate(out_genes)}[g] for g in genes]
    return smooth_and_mask(pred[:, cols], prep.coords, params, val, mask[:, cols], library=prep.library()), tinfo


def smooth_and_mask(pred: np.ndarray, coords: np.ndarray | None, params: SpatialParams, val: Validation,
                    mask: np.ndarray, *, library: np.ndarray | None = None) -> np.ndarray:
    """The validated spatial smoothing, then the anti-hallucination mask again (a neighbour's value does not put a
    gene into a spot whose matched cells never express it), then the measurement at each spot's depth where
    validation kept it (``library``: the spots' library sizes; a masked 0 stays 0), then the validated offset: the
    whole output shifts, the masked spots included (they stay the gene's lowest value), so no correlation changes."""
    weight = val.smooth if params.smooth != "off" else 0.0
    out = smooth_spots(pred, spot_neighbours(coords, params.smooth_k), weight)
    out = np.where(mask, out, 0.0).astype(np.float32) if params.mask else out
    if val.depth and params.depth != "off":
        if library is None:
            raise ValueError("smooth_and_mask: validation kept the depth step but no library sizes were given")
        out = expected_measurement(out, library)
    return shift_up(out, val.offset if params.offset != "off" else 0.0)
