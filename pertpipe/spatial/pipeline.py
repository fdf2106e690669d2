"""One slide through the branch: prepare matrices for a set of held-out genes, fit the latent space and the
pseudo-labels, run lrimpute (and its ablations) and the baselines. The k-fold evaluation and the pipeline's
``knn_labels`` / ``train_lrimpute`` / ``impute`` rules all go through here, so a held-out gene is removed in one
place: :func:`prepare` drops it from every spatial input before anything is fitted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from pertpipe.spatial import baselines
from pertpipe.spatial.model import (
    ImputeInputs,
    SpatialParams,
    col_variance,
    columns,
    fit_latent,
    fit_lrimpute,
    knn_labels,
    log_normalize,
    match_cells,
    predict_lrimpute,
    standardize,
)

log = logging.getLogger("pertpipe.spatial")

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


def _per_gene(metric: Any, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``metric`` (a :mod:`pertpipe.evaluation.spatial` function) of every gene column."""
    return np.array([metric(pred[:, j], truth[:, j]) for j in range(truth.shape[1])], dtype=np.float64)


def _pccs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    from pertpipe.evaluation.spatial import pcc

    return _per_gene(pcc, pred, truth)


def _ssims(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    from pertpipe.evaluation.spatial import ssim

    return _per_gene(ssim, pred, truth)


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


def _median_pcc(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.median(_pccs(pred, truth))) if truth.shape[1] else 0.0


def _gains(new: np.ndarray, old: np.ndarray, margin: float) -> bool:
    """A candidate replaces the current choice only if it gains on the validation genes beyond chance: median PCC up
    by more than ``margin`` and the paired per-gene gain's mean above two standard errors (many candidates are
    tried, so a gain within the noise must not be taken)."""
    d = new - old
    if len(d) < 2:
        return False
    se = d.std(ddof=1) / np.sqrt(len(d))
    return bool(np.median(new) - np.median(old) > margin and d.mean() > 2 * se)


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
    run.current = _pccs(run.pred, truth)
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
        return {w: _pccs(self.final(p, w), self.truth) for w in self.smooth_weights}


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
        cands = {name: _pccs(knn_labels(ix, run.y, run.y)[0], run.truth) for name, ix in sets.items()}
        val.scores["neighbours"] = {"latent": float(np.median(run.current)),
                                    **{n: float(np.median(c)) for n, c in cands.items()}}
        top = max(cands, key=lambda c: np.median(cands[c]))
        if _gains(cands[top], run.current, params.validation_margin):
            val.neighbours, run.idx, run.current = top, sets[top], cands[top]
            run.pred = knn_labels(run.idx, run.y, run.y)[0]
    elif params.neighbours != "latent":
        val.neighbours, run.idx = params.neighbours, neighbour_set(run.prep_v, run.idx, k, params.neighbours)
        run.pred = knn_labels(run.idx, run.y, run.y)[0]
        run.current = _pccs(run.pred, run.truth)


def _choose_residual(val: Validation, run: _Run) -> None:
    if run.params.residual != "auto":
        return
    val.scores["residual"] = {"0": float(np.median(run.current))}
    cands = {}
    for alpha in run.params.residual_alphas:
        corr = residual_transfer(run.prep_v, run.idx, run.prep_v.input_genes, run.genes, alpha)
        for s_ in run.params.residual_strengths:
            cands[(float(s_), float(alpha))] = r = _pccs(run.pred + s_ * corr, run.truth)
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
    run.current = _pccs(run.final(run.pred, val.smooth), run.truth)


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
    cand = _pccs(expected_measurement(smooth_spots(run.pred, run.nb, val.smooth), library), run.truth)
    val.scores["depth"] = {"off": float(np.median(run.current)), "on": float(np.median(cand))}
    if _gains(cand, run.current, run.params.validation_margin):
        val.depth, run.current, run.library = True, cand, library


def _choose_offset(val: Validation, run: _Run) -> None:
    """The output's offset, judged by SSIM (a shift leaves every PCC as it is)."""
    if run.params.offset != "auto":
        return
    final = run.final(run.pred, val.smooth)
    base = _ssims(final, run.truth)
    val.scores["offset"] = {"0": float(np.median(base))}
    cands = {}
    for c in run.params.offsets:
        cands[float(c)] = r = _ssims(shift_up(final, c), run.truth)
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


def run_methods(spatial: ad.AnnData, scrna: ad.AnnData, lr_genes: list[str], genes: list[str], priors: Priors | None,
                params: SpatialParams, methods: list[str], *, heldout: list[str] | tuple[str, ...] = (),
                tangram_epochs: int = 300, gimvi_epochs: int = 200) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Predictions (spots x ``genes``, log1p scale for ours) of each method with ``heldout`` hidden from them all.
    The validation (k, residual transfer, smoothing, priors) runs once on visible genes; the ablations switch one of
    its choices off."""
    prep = prepare(spatial, scrna, heldout, max_input_genes=params.max_input_genes)
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"unavailable": {}}
    if any(m in LRIMPUTE_VARIANTS or m == "knn_mean" for m in methods):  # the peers need neither
        val = validate(prep, params, spatial=spatial, scrna=scrna, lr_genes=lr_genes, priors=priors)
        lat = latent(prep, params, k=val.k, neighbours=val.neighbours)
        info.update(latent=lat.info, validation=val.as_dict())
    lr_col = {g: j for j, g in enumerate(lr_genes)}
    fits: dict[str, Any] = {}
    for m in methods:
        if m in LRIMPUTE_VARIANTS:
            out[m], info[m] = lrimpute_predict(prep, lat, lr_genes, genes, priors, params.with_(**LRIMPUTE_VARIANTS[m]),
                                               val, fits=fits)
        elif m == "knn_mean":
            labels, _ = knn_labels(lat.idx_latent if lat.idx_latent is not None else lat.idx,
                                   prep.sc_log[:, prep.sc_cols(lr_genes)], prep.sc_counts[:, prep.sc_cols(lr_genes)])
            out[m] = labels[:, [lr_col[g] for g in genes]]
        elif m == "depth_only":  # what depth alone predicts: each gene at its scRNA mean, measured at the spot's depth
            level = np.asarray(prep.sc_log[:, prep.sc_cols(genes)].mean(0), dtype=np.float32).reshape(1, -1)
            out[m] = expected_measurement(np.repeat(level, prep.x_sp.shape[0], 0), prep.library())
        elif m == "hvg_ae":
            targets = list(lr_genes) + hvgs(prep, params.n_hvg, set(lr_genes))
            y = columns(prep.sc_log, prep.sc_cols(targets))
            pred = baselines.hvg_autoencoder(prep.x_sc, y, prep.x_sp, params)
            out[m] = pred[:, [lr_col[g] for g in genes]]
        elif m == "spage":
            sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
            out[m] = baselines.spage(columns(prep.sp_log, [sp_col[g] for g in prep.input_genes]),
                                     columns(prep.sc_log, prep.sc_cols(prep.input_genes)),
                                     columns(prep.sc_log, prep.sc_cols(genes)))
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
