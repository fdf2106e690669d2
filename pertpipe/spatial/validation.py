"""lrimpute's validation on visible genes only (:func:`validate`): the neighbours, the residual transfer, the
regression, smoothing, depth and offset, and the network priors are each kept only where they gain on held-back
visible genes beyond chance (:class:`Validation` records the choices and their scores)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import anndata as ad
import numpy as np

from pertpipe.spatial.lrimpute import Validation, lrimpute_predict
from pertpipe.spatial.model import (
    SpatialParams,
    columns,
    fit_latent,
    knn_labels,
    log_normalize,
    match_cells,
)
from pertpipe.spatial.prepare import Latent, Prepared, Priors, neighbour_set, prepare
from pertpipe.spatial.refine import (
    blend_regression,
    expected_measurement,
    expression_regression,
    pccs,
    residual_transfer,
    shift_up,
    smooth_spots,
    spot_neighbours,
    ssims,
)


def _median_pcc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.median(pccs(pred, truth))) if truth.shape[1] else 0.0


def _gains(new: np.ndarray, old: np.ndarray, margin: float) -> bool:
    """A candidate replaces the current choice only if it gains on the validation genes beyond chance: median PCC up
    by more than ``margin`` and the paired per-gene gain's mean above two standard errors (many candidates are
    tried, so a gain within the noise must not be taken)."""
    d = new - old
    if len(d) < 2:
        return False
    se = d.std(ddof=1) / np.sqrt(len(d))
    return bool(np.median(new) - np.median(old) > margin and d.mean() > 2 * se)


def _validation_genes(prep: Prepared, lr_genes: list[str], params: SpatialParams) -> list[str]:
    """A ``val_fraction`` share of the visible shared genes, drawn separately among LR genes and the others (so the
    priors can be judged on LR genes)."""
    rng = np.random.default_rng(params.seed + 7)
    lr = set(lr_genes)
    out: list[str] = []
    for group in ([g for g in prep.input_genes if g in lr], [g for g in prep.input_genes if g not in lr]):
        n = int(round(params.val_fraction * len(group)))
        if n:
            out += [group[j] for j in np.sort(rng.choice(len(group), n, replace=False))]
    return out


def validate(prep: Prepared, params: SpatialParams, *, spatial: ad.AnnData, scrna: ad.AnnData,
             lr_genes: list[str] | None = None, priors: Priors | None = None,
             checkpoint: str | None = None) -> Validation:
    """Choose k, the neighbour set, the residual transfer, the expression regression, the smoothing weight, the
    output's offset and the priors on validation genes: a share of the visible shared genes is hidden from the slide
    exactly as a held-out gene is (removed before normalising, out of a second latent fit), and every candidate
    predicts them. Only visible genes are used, so a k-fold's held-out genes never inform a choice; a refinement is
    kept only when it beats the previous choice by ``validation_margin`` (and beyond chance, :func:`_gains`)."""
    lr_genes = list(lr_genes or [])
    val_genes = _validation_genes(prep, lr_genes, params)
    fixed_k = params.k if params.k != "auto" else params.align_k
    needs = "auto" in (params.k, params.residual, params.smooth, params.regression, params.offset, params.neighbours,
                     params.depth) \
        or (params.priors == "validated" and priors is not None)
    if not needs or not val_genes or len(prep.input_genes) - len(val_genes) < 5:
        return Validation(int(fixed_k), genes=val_genes, ppi=params.priors != "off", lt=params.priors != "off",
                          neighbours=params.neighbours if params.neighbours != "auto" else "latent")
    prep_v = prepare(spatial, scrna, sorted(set(prep.heldout) | set(val_genes)), max_input_genes=params.max_input_genes)
    z_sp, z_sc, _ = fit_latent(prep_v.x_sp, prep_v.x_sc, params, checkpoint=checkpoint)
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    truth = columns(prep.sp_log, [sp_col[g] for g in val_genes])  # as the evaluation's truth: the whole slide
    y = columns(prep.sc_log, prep.sc_cols(val_genes))
    scores: dict[str, Any] = {"k": {}}
    best_k, best = int(fixed_k), -np.inf
    for k in (sorted({min(k, len(z_sc)) for k in params.k_candidates}) if params.k == "auto" else [int(fixed_k)]):
        idx, _ = match_cells(z_sp, z_sc, k, metric=params.match)
        scores["k"][str(k)] = sc = _median_pcc(knn_labels(idx, y, y)[0], truth)
        if sc > best:
            best_k, best = int(k), sc
    idx, _ = match_cells(z_sp, z_sc, best_k, metric=params.match)
    val = Validation(best_k, genes=val_genes, scores=scores)
    run = _Run(prep_v, params, val_genes, truth, y, idx, knn_labels(idx, y, y)[0])
    run.current = pccs(run.pred, truth)
    _choose_neighbours(val, run)
    _choose_residual(val, run)
    nb = spot_neighbours(prep.coords, params.smooth_k) if params.smooth == "auto" else None
    run.smooth_weights = [0.0] + [float(w) for w in params.smooth_weights] if nb is not None else [0.0]
    run.nb = nb
    if params.regression == "auto":
        _choose_regression(val, run)  # the smoothing weight with it
    else:
        _choose_smoothing(val, run)
    _choose_depth(val, run)  # then the offset is judged as measured where the depth step is on
    _choose_offset(val, run)
    if params.priors == "validated" and priors is not None:
        _validate_priors(val, prep_v, params, lr_genes, priors, spatial, Latent(z_sp, z_sc, run.idx, {}))
    elif params.priors == "off":
        val.ppi = val.lt = False
        scores["priors"] = {"note": "off (spatial.model.priors: off, the default)"}
    return val


@dataclass
class _Run:
    """The validation's state as one refinement after another is judged: the slide with the validation genes
    hidden, their truth and scRNA values, the current neighbour set, prediction and its per-gene PCCs."""

    prep_v: Prepared
    params: SpatialParams
    genes: list[str]
    truth: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    pred: np.ndarray
    current: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nb: np.ndarray | None = None
    smooth_weights: list[float] = field(default_factory=lambda: [0.0])
    library: np.ndarray | None = None  # the spots' depth, once validation kept the depth step

    def final(self, p: np.ndarray, smooth: float) -> np.ndarray:
        """``p`` smoothed, then measured at the spots' depth where that step is on (what the output will be)."""
        out = smooth_spots(p, self.nb, smooth)
        return out if self.library is None else expected_measurement(out, self.library)

    def smoothed(self, p: np.ndarray) -> dict[float, np.ndarray]:
        """PCCs of ``p`` under each candidate smoothing weight (0 included)."""
        return {w: pccs(self.final(p, w), self.truth) for w in self.smooth_weights}


def _best(cands: dict[Any, np.ndarray], size: Any = lambda c: c) -> Any:
    """The candidate with the highest median (ties: the smallest ``size``, a number or a tuple of numbers)."""
    def neg(c: Any) -> tuple:
        z = size(c)
        return tuple(-x for x in z) if isinstance(z, tuple) else (-z,)

    return max(cands, key=lambda c: (np.median(cands[c]), neg(c)))


def _choose_neighbours(val: Validation, run: _Run) -> None:
    params, k = run.params, val.k
    if params.neighbours == "auto":
        sets = {"pv": neighbour_set(run.prep_v, run.idx, k, "pv"), "both": neighbour_set(run.prep_v, run.idx, k, "both")}
        cands = {name: pccs(knn_labels(ix, run.y, run.y)[0], run.truth) for name, ix in sets.items()}
        val.scores["neighbours"] = {"latent": float(np.median(run.current)),
                                    **{n: float(np.median(c)) for n, c in cands.items()}}
        top = max(cands, key=lambda c: np.median(cands[c]))
        if _gains(cands[top], run.current, params.validation_margin):
            val.neighbours, run.idx, run.current = top, sets[top], cands[top]
            run.pred = knn_labels(run.idx, run.y, run.y)[0]
    elif params.neighbours != "latent":
        val.neighbours, run.idx = params.neighbours, neighbour_set(run.prep_v, run.idx, k, params.neighbours)
        run.pred = knn_labels(run.idx, run.y, run.y)[0]
        run.current = pccs(run.pred, run.truth)


def _choose_residual(val: Validation, run: _Run) -> None:
    if run.params.residual != "auto":
        return
    val.scores["residual"] = {"0": float(np.median(run.current))}
    cands = {}
    for alpha in run.params.residual_alphas:
        corr = residual_transfer(run.prep_v, run.idx, run.prep_v.input_genes, run.genes, alpha)
        for s_ in run.params.residual_strengths:
            cands[(float(s_), float(alpha))] = r = pccs(run.pred + s_ * corr, run.truth)
            val.scores["residual"][f"{s_:g} (alpha {alpha:g})"] = float(np.median(r))
    top = _best(cands, lambda c: c[0])
    if _gains(cands[top], run.current, run.params.validation_margin):
        (val.strength, val.alpha), run.current = top, cands[top]
        run.pred = run.pred + val.strength * residual_transfer(run.prep_v, run.idx, run.prep_v.input_genes, run.genes,
                                                               val.alpha)


def _choose_regression(val: Validation, run: _Run) -> None:
    """Blend weight and ridge size of the expression regression together with the smoothing weight (a regression
    is noisier per spot than a kNN mean, and smoothing takes that noise out). The base is the kNN path with the
    smoothing it earns on its own; of the (weight, ridge size, smoothing) candidates that beat it beyond chance, the
    one with the highest median is kept, else the base stays."""
    params = run.params
    plain = run.smoothed(run.pred)
    s0 = _best({w: r for w, r in plain.items() if w > 0}) if len(plain) > 1 else 0.0
    if not (s0 and _gains(plain[s0], plain[0.0], params.validation_margin)):
        s0 = 0.0
    scores = val.scores["regression"] = {"0": float(np.median(plain[0.0])),
                                         f"0 (smoothing {s0:g})": float(np.median(plain[s0]))}
    cands, regs = {}, {}
    for alpha in params.regression_alphas:
        regs[float(alpha)] = reg = expression_regression(run.prep_v, run.genes, alpha)
        for w in params.regression_weights:
            for s_, r in run.smoothed(blend_regression(run.pred, reg, w)).items():
                cands[(float(w), float(alpha), s_)] = r
                scores[f"{w:g} (alpha {alpha:g}, smoothing {s_:g})"] = float(np.median(r))
    passing = {c: r for c, r in cands.items() if _gains(r, plain[s0], params.validation_margin)}
    val.smooth = s0
    val.scores["smooth"] = {f"{w:g}": float(np.median(r)) for w, r in plain.items()}  # the kNN path's
    if passing:
        val.regression, val.regression_alpha, val.smooth = top = _best(passing, lambda c: (c[0], c[2]))
        val.scores["smooth"][f"{val.smooth:g} with the regression"] = float(np.median(passing[top]))
        run.pred = blend_regression(run.pred, regs[val.regression_alpha], val.regression)
    run.current = pccs(run.final(run.pred, val.smooth), run.truth)


def _choose_smoothing(val: Validation, run: _Run) -> None:
    if run.params.smooth != "auto":
        return
    val.scores["smooth"] = {"0": float(np.median(run.current))}
    cands = {w: r for w, r in run.smoothed(run.pred).items() if w > 0}
    for w, r in cands.items():
        val.scores["smooth"][f"{w:g}"] = float(np.median(r))
    if cands:
        top = _best(cands)
        if _gains(cands[top], run.current, run.params.validation_margin):
            val.smooth = top


def _choose_depth(val: Validation, run: _Run) -> None:
    """The prediction as chosen so far (smoothing included) measured at the spots' depth
    (:func:`expected_measurement`) against it as it is. Judged last, like each step given the ones before it: one
    measurement per validation, where judging every regression and smoothing candidate as measured would cost one
    each."""
    if run.params.depth != "auto":
        return
    library = run.prep_v.library()
    cand = pccs(expected_measurement(smooth_spots(run.pred, run.nb, val.smooth), library), run.truth)
    val.scores["depth"] = {"off": float(np.median(run.current)), "on": float(np.median(cand))}
    if _gains(cand, run.current, run.params.validation_margin):
        val.depth, run.current, run.library = True, cand, library


def _choose_offset(val: Validation, run: _Run) -> None:
    """The output's offset, judged by SSIM (a shift leaves every PCC as it is)."""
    if run.params.offset != "auto":
        return
    final = run.final(run.pred, val.smooth)
    base = ssims(final, run.truth)
    val.scores["offset"] = {"0": float(np.median(base))}
    cands = {}
    for c in run.params.offsets:
        cands[float(c)] = r = ssims(shift_up(final, c), run.truth)
        val.scores["offset"][f"{c:g}"] = float(np.median(r))
    top = _best(cands)
    if _gains(cands[top], base, run.params.validation_margin):
        val.offset = top


def _validate_priors(val: Validation, prep_v: Prepared, params: SpatialParams, lr_genes: list[str], priors: Priors,
                     spatial: ad.AnnData, lat: Latent) -> None:
    """Keep the PPI / ligand -> target term only where lrimpute with it predicts the LR validation genes better
    than without it (median PCC); ``prep_v`` is the slide with the validation genes hidden as held-out genes are."""
    lr_val = [g for g in val.genes if g in set(lr_genes)]
    on = {"ppi": params.w_ppi > 0 and priors.laplacian is not None and bool(np.abs(priors.laplacian).sum()),
          "lt": params.w_lt > 0 and priors.prior is not None and bool(priors.ligands)}
    if not lr_val or not any(on.values()):
        val.ppi, val.lt = on["ppi"], on["lt"]
        val.scores["priors"] = {"note": "no LR validation gene or no prior to judge"}
        return
    sp_col = {g: j for j, g in enumerate(spatial.var_names)}
    truth = columns(log_normalize(spatial.X), [sp_col[g] for g in lr_val])

    def score(ppi: bool, lt: bool) -> float:
        v = replace(val, ppi=ppi, lt=lt)
        return _median_pcc(lrimpute_predict(prep_v, lat, lr_genes, lr_val, priors, params, v)[0], truth)

    both = score(on["ppi"], on["lt"])
    res = {"with both": both}
    if on["ppi"]:
        res["without ppi"] = score(False, on["lt"])
    if on["lt"]:
        res["without ligand_target"] = score(on["ppi"], False)
    val.ppi = on["ppi"] and both > res.get("without ppi", np.inf)
    val.lt = on["lt"] and both > res.get("without ligand_target", np.inf)
    val.scores["priors"] = {**res, "n_lr_validation_genes": len(lr_val)}
