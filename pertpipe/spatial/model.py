"""Shared latent space, kNN pseudo-labels and the LR-only imputation model (``lrimpute``).

1. Both modalities are log1p-normalised (counts per 10k over each one's own genes) and standardised per gene
   within the modality over the genes they share (held-out genes removed first).
2. Two encoders (spatial, scRNA) share one decoder that reconstructs the shared genes; each spot's latent code is
   pulled toward the centroid of its k nearest scRNA cells (re-found every epoch; the centroid is a fixed target).
   No MMD/adversarial term and no deconvolution into cell-type proportions.
3. Pseudo-labels: the mean log1p expression of each spot's k nearest cells over the output genes; the
   anti-hallucination mask marks (spot, gene) where none of those cells has a count.
4. ``LRImputeModule``: a decoder from the spot's latent code to the LR genes. Loss (the module owns it):
   pseudo-label MSE + w_obs * MSE to the spot's own measured LR genes (mapped onto the pseudo-label scale per gene)
   + w_ppi * tr(Y L Y^T) (PPI graph Laplacian over standardised outputs) + w_lt * ligand -> target consistency
   (1 - Pearson across spots between the prior-weighted predicted ligands and each measured target gene).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from pertpipe.core.layers import mlp
from pertpipe.core.params import TrainingParams, fraction


@dataclass
class SpatialParams(TrainingParams):
    """Settings of the latent space, the pseudo-labels and lrimpute (config ``spatial.model``).

    The training fields are the shared loop's (:class:`~pertpipe.core.params.TrainingParams`) with the spatial fits'
    defaults: Adam (weight_decay 0), no warm-up, no early stopping (patience 0: every epoch runs) and the last
    epoch's weights kept; ``val_fraction`` is the share of visible shared genes held out to choose k (``k: auto``).
    """

    k: int | Literal["auto"] = "auto"  # matched cells per spot; auto = chosen on validation genes (k_candidates)
    k_candidates: tuple[int, ...] = (5, 10, 20, 50)
    align_k: int = 20  # matched items per spot/cell in the alignment pull while the encoders train
    val_fraction: float = fraction(0.2)  # auto k: share of the visible shared genes held out of a validation latent fit
    match: Literal["cosine", "csls"] = "cosine"
    # whose kNN mean: the latent space's matched cells, SpaGE's principal-vector kNN, or both; auto = validated
    neighbours: Literal["auto", "latent", "pv", "both"] = "auto"
    latent_dim: int = 32
    hidden: int = 128
    encoder_epochs: int = 100
    align_weight: float = 1.0
    align_start: float = 0.2  # fraction of the encoder epochs before the kNN pull starts
    decoder_epochs: int = 100
    max_targets: int = 300  # ligand -> target term: the targets with the most prior mass
    lr: float = field(default=1e-3, metadata={"gt": 0})
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    warmup_epochs: int = field(default=0, metadata={"ge": 0})
    patience: int = field(default=0, metadata={"ge": 0})  # 0: no early stopping
    batch_size: int = 256
    w_obs: float = 1.0
    w_ppi: float = 0.1
    w_lt: float = 0.1
    mask: bool = True
    output: Literal["lr", "hvg"] = "lr"
    n_hvg: int = 1000
    max_input_genes: int = 2000  # shared genes the latent space reads (the most variable in the scRNA-seq)
    # what each spot measures: its residual on the visible shared genes, transferred to the output genes through a
    # ridge fitted on within-cell-type deviations of the scRNA cells; strength and ridge size chosen on validation
    residual: Literal["auto", "off"] = "auto"
    residual_strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    residual_alphas: tuple[float, ...] = (0.1, 1.0, 10.0)
    # what the spot measures, read directly: a ridge fitted on the scRNA cells from the standardised visible shared
    # genes to each output gene, applied to the spot's own profile and blended into the pseudo-labels (rescaled to
    # their spread per gene); ridge size and blend weight chosen on validation
    regression: Literal["auto", "off"] = "auto"
    regression_alphas: tuple[float, ...] = (10.0, 100.0, 1000.0)
    regression_weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    # space: the prediction mixed with the mean of its smooth_k nearest spots, weight chosen on validation
    smooth: Literal["auto", "off"] = "auto"
    smooth_weights: tuple[float, ...] = (0.25, 0.5, 0.75)
    smooth_k: int = 6
    # the output's floor: the prediction shifted up by a multiple of its mean across spots, chosen on validation genes
    # by SSIM (measured spots pool many cells and sit higher above zero than a mean of single cells); a shift, so PCC
    # and RMSE do not change, only the max-scaled metrics (SSIM) and JS see it
    offset: Literal["auto", "off"] = "auto"
    offsets: tuple[float, ...] = (0.5, 1.0, 2.0)
    # the slide's depth: the prediction (a mean of single cells' log1p values) turned into what the slide would measure
    # at each spot's library size, E[log1p(X x 10^4 / L)] with X ~ Poisson(L x expm1(prediction) / 10^4); kept where
    # the validation genes gain (sparse Visium genes, whose measured value rises with the spot's depth)
    depth: Literal["auto", "off"] = "auto"
    # the PPI and ligand -> target terms: off (the default: bench_spatial.py found neither helping on the held-out
    # genes it reaches, even when kept only where validation genes said so), validated (kept only where they help on
    # validation genes) or on (always)
    priors: Literal["off", "validated", "on"] = "off"
    validation_margin: float = field(default=0.005, metadata={"ge": 0})  # median PCC a refinement must gain
    seed: int = 0

    @classmethod
    def from_config(cls, values: dict[str, Any] | None, *, seed: int = 0, where: str = "spatial.model") -> SpatialParams:
        from pertpipe.core.params import check_params

        values = dict(values or {})
        tuples = {"k_candidates": int, "residual_strengths": float, "residual_alphas": float, "smooth_weights": float,
                  "regression_alphas": float, "regression_weights": float, "offsets": float}
        for key in tuples:
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        check_params("spatial", cls, values, where=where)  # the models' checker: names, types, choices, bounds
        values.setdefault("seed", seed)
        for key, kind in tuples.items():
            if key in values:
                values[key] = tuple(kind(v) for v in values[key])
        return cls(**values)

    def with_(self, **changes: Any) -> SpatialParams:
        return SpatialParams(**{**asdict(self), **changes})


def log_normalize(counts: sp.spmatrix | np.ndarray, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p(counts per ``target_sum``), sparse (rows = spots/cells; zeros stay zeros, nothing is densified)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    lib = np.asarray(x.sum(1)).ravel()
    lib[lib == 0] = 1.0
    x = sp.csr_matrix(sp.diags(target_sum / lib) @ x)
    x.data = np.log1p(x.data)
    return x.astype(np.float32)


def columns(m: sp.spmatrix | np.ndarray, cols: list[int]) -> np.ndarray:
    """Dense float32 copy of the selected columns only."""
    sub = m[:, cols]
    return (sub.toarray() if sp.issparse(sub) else np.asarray(sub)).astype(np.float32)


def col_variance(m: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Per-column variance without densifying a sparse matrix."""
    if not sp.issparse(m):
        return np.asarray(m).var(0)
    mean = np.asarray(m.mean(0)).ravel()
    sq = np.asarray(m.multiply(m).mean(0)).ravel()
    return np.maximum(sq - mean ** 2, 0)


def standardize(x: np.ndarray) -> np.ndarray:
    mu, sd = x.mean(0, keepdims=True), x.std(0, keepdims=True)
    return ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def relu_mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """The spatial networks' MLP (one ReLU hidden layer), from the shared helper."""
    return mlp(n_in, hidden, n_out, activation="relu")


class LatentModule(nn.Module):
    """Two encoders (spatial, scRNA) and one shared decoder over the shared genes.

    Each encoder = a linear map started from the scRNA's principal axes + a small non-linear residual (starts at 0),
    so training starts from the PCA geometry (which already matches spots to cells) and refines it."""

    def __init__(self, n_genes: int, hidden: int, latent_dim: int, basis: np.ndarray | None = None) -> None:
        super().__init__()
        self.lin_sp = nn.Linear(n_genes, latent_dim, bias=False)
        self.lin_sc = nn.Linear(n_genes, latent_dim, bias=False)
        self.res_sp = relu_mlp(n_genes, hidden, latent_dim)
        self.res_sc = relu_mlp(n_genes, hidden, latent_dim)
        self.dec = nn.Linear(latent_dim, n_genes)
        if basis is not None:  # genes x latent_dim, orthonormal columns
            with torch.no_grad():
                b = torch.from_numpy(basis.T.astype(np.float32))
                self.lin_sp.weight.copy_(b)
                self.lin_sc.weight.copy_(b)
                self.dec.weight.copy_(b.T)
                self.dec.bias.zero_()
        for res in (self.res_sp, self.res_sc):
            nn.init.zeros_(res[-1].weight)
            nn.init.zeros_(res[-1].bias)

    def _code(self, lin: nn.Module, res: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return lin(x) + res(x)

    def encode_sp(self, x: torch.Tensor) -> torch.Tensor:
        return self._code(self.lin_sp, self.res_sp, x)

    def encode_sc(self, x: torch.Tensor) -> torch.Tensor:
        return self._code(self.lin_sc, self.res_sc, x)

    def loss(self, x_sp: torch.Tensor, x_sc: torch.Tensor, centroid_sp: torch.Tensor | None,
             centroid_sc: torch.Tensor | None, align_weight: float) -> torch.Tensor:
        z_sp, z_sc = self.encode_sp(x_sp), self.encode_sc(x_sc)
        loss = ((self.dec(z_sp) - x_sp) ** 2).mean() + ((self.dec(z_sc) - x_sc) ** 2).mean()
        if align_weight > 0:  # pull (cosine) toward the fixed centroid of the matched items of the other modality
            cos = nn.functional.cosine_similarity
            if centroid_sp is not None:
                loss = loss + align_weight * (1 - cos(z_sp, centroid_sp, dim=1)).mean()
            if centroid_sc is not None:
                loss = loss + align_weight * (1 - cos(z_sc, centroid_sc, dim=1)).mean()
        return loss


def nearest(z_query: np.ndarray, z_ref: np.ndarray, k: int, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` nearest rows of ``z_ref`` for each row of ``z_query``."""
    k = min(k, len(z_ref))
    idx = np.empty((len(z_query), k), dtype=np.int64)
    dist = np.empty((len(z_query), k), dtype=np.float32)
    ref_sq = (z_ref ** 2).sum(1)
    for s in range(0, len(z_query), chunk):
        q = z_query[s:s + chunk]
        d = np.maximum((q ** 2).sum(1)[:, None] + ref_sq[None, :] - 2 * q @ z_ref.T, 0)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        dist[s:s + chunk] = np.sqrt(np.take_along_axis(d, idx[s:s + chunk], 1))
    return idx, dist


def _unit(z: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(n > 0, n, 1.0)


def _topk_mean(sim: np.ndarray, k: int) -> np.ndarray:
    k = min(k, sim.shape[1])
    return np.partition(sim, sim.shape[1] - k, axis=1)[:, -k:].mean(1)


def match_cells(z_sp: np.ndarray, z_sc: np.ndarray, k: int, *, metric: str = "cosine",
                chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each spot's ``k`` matched cells by cosine similarity (``metric: cosine``; Euclidean kNN across two modalities
    collapses onto a few "hub" cells), or by CSLS (``csls``, cross-domain similarity local scaling: 2 cos(s, c) -
    r(s) - r(c), r = mean similarity to the k nearest of the other modality, which penalises hubs further).
    Returns (indices spots x k, scores)."""
    a, b = _unit(z_sp.astype(np.float32)), _unit(z_sc.astype(np.float32))
    k = min(k, len(b))
    if metric == "csls":
        r_sp = np.concatenate([_topk_mean(a[s:s + chunk] @ b.T, k) for s in range(0, len(a), chunk)])
        r_sc = np.concatenate([_topk_mean(b[s:s + chunk] @ a.T, k) for s in range(0, len(b), chunk)])
    else:
        r_sp, r_sc = np.zeros(len(a), np.float32), np.zeros(len(b), np.float32)
    idx = np.empty((len(a), k), dtype=np.int64)
    score = np.empty((len(a), k), dtype=np.float32)
    for s in range(0, len(a), chunk):
        c = (2 if metric == "csls" else 1) * (a[s:s + chunk] @ b.T) - r_sp[s:s + chunk, None] - r_sc[None, :]
        part = np.argpartition(-c, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(-c, part, 1).argsort(1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        score[s:s + chunk] = np.take_along_axis(c, idx[s:s + chunk], 1)
    return idx, score


def knn_labels(idx: np.ndarray, y_ref: sp.spmatrix | np.ndarray, counts_ref: sp.spmatrix | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels (mean of the matched cells' ``y_ref`` rows) and the mask (any matched cell has a count).
    An averaging matrix (spots x cells, k entries per row) does both without densifying the reference."""
    n, k = idx.shape
    avg = sp.csr_matrix((np.full(n * k, 1.0 / k), (np.repeat(np.arange(n), k), idx.ravel())),
                        shape=(n, y_ref.shape[0]))
    labels = avg @ y_ref
    expressed = (sp.csr_matrix(counts_ref) > 0).astype(np.float32) if sp.issparse(counts_ref) else \
        (np.asarray(counts_ref) > 0).astype(np.float32)
    hits = avg @ expressed
    labels = labels.toarray() if sp.issparse(labels) else np.asarray(labels)
    hits = hits.toarray() if sp.issparse(hits) else np.asarray(hits)
    return labels.astype(np.float32), hits > 0


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def pca_basis(x: np.ndarray, n: int) -> np.ndarray:
    """genes x n principal axes of ``x`` (rows = observations)."""
    from pertpipe.core.pca import top_components

    basis = top_components(x - x.mean(0), n, fix_signs=False).T
    if basis.shape[1] < n:  # fewer observations/genes than latent dims: pad with zeros
        basis = np.pad(basis, ((0, 0), (0, n - basis.shape[1])))
    return basis.astype(np.float32)


def _loop_config(params: SpatialParams, epochs: int, steps: int) -> Any:
    """The shared loop's settings for a spatial fit: a full pass over the data per epoch (``steps`` batches), no
    gradient clipping, the last epoch's weights kept."""
    from dataclasses import replace

    from pertpipe.core.training import TrainConfig

    return replace(TrainConfig.from_params(params), epochs=epochs, steps_per_epoch=steps, grad_clip=0.0,
                   restore_best=False)


def _generator_state(g: torch.Generator) -> tuple:
    """(get, set) of a generator that runs across epochs, for the shared loop's checkpoints (exact resume)."""
    return (lambda: g.get_state(), lambda state: g.set_state(state))


def fit_latent(x_sp: np.ndarray, x_sc: np.ndarray, params: SpatialParams, *, checkpoint: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Latent codes (spots, cells) of the two standardised shared-gene matrices, aligned by kNN: every epoch each
    spot's k matched cells (and each cell's k matched spots: the pull goes both ways, so spots do not collapse onto
    a few hub cells) give a fixed centroid that the code is pulled toward. Trained by the shared loop
    (:func:`pertpipe.core.training.train`), which checkpoints to ``checkpoint`` and resumes from it."""
    from pertpipe.core.training import train
    from pertpipe.io import pick_device

    torch.manual_seed(params.seed)
    g = _generator(params.seed)
    dev = pick_device(params.device, field="spatial.model.device")
    model = LatentModule(x_sp.shape[1], params.hidden, params.latent_dim, pca_basis(x_sc, params.latent_dim)).to(dev)
    t_sp, t_sc = torch.from_numpy(x_sp).to(dev), torch.from_numpy(x_sc).to(dev)
    start = int(params.align_start * params.encoder_epochs)
    bs = params.batch_size
    n_steps = max(1, int(np.ceil(max(len(t_sp), len(t_sc)) / bs)))
    ep: dict[str, Any] = {}

    def on_epoch_start(epoch: int) -> None:
        ep.update(cen_sp=None, cen_sc=None, step=0)
        if epoch >= start and params.align_weight > 0:
            with torch.no_grad():
                z_sp, z_sc = model.encode_sp(t_sp).cpu().numpy(), model.encode_sc(t_sc).cpu().numpy()
            idx, _ = match_cells(z_sp, z_sc, params.align_k, metric=params.match)
            ep["cen_sp"] = torch.from_numpy(_unit(z_sc)[idx].mean(1)).to(dev)
            idx_c, _ = match_cells(z_sc, z_sp, params.align_k, metric=params.match)
            ep["cen_sc"] = torch.from_numpy(_unit(z_sp)[idx_c].mean(1)).to(dev)
        ep["perm_sp"] = torch.randperm(len(t_sp), generator=g).to(dev)
        ep["perm_sc"] = torch.randperm(len(t_sc), generator=g).to(dev)

    def step(_gen, _epoch):
        k = ep["step"]
        ep["step"] += 1
        b_sp = ep["perm_sp"][(k * bs) % len(t_sp):][:bs]
        b_sc = ep["perm_sc"][(k * bs) % len(t_sc):][:bs]
        cen_sp, cen_sc = ep["cen_sp"], ep["cen_sc"]
        loss = model.loss(t_sp[b_sp], t_sc[b_sc], cen_sp[b_sp] if cen_sp is not None else None,
                          cen_sc[b_sc] if cen_sc is not None else None, params.align_weight)
        return loss, {}, len(b_sp) + len(b_sc)

    tlog = None
    if params.encoder_epochs > 0:
        tlog = train(model, param_groups=[{"params": list(model.parameters())}], step=step, validate=None,
                     cfg=_loop_config(params, params.encoder_epochs, n_steps), seed=params.seed, device=str(dev),
                     checkpoint=checkpoint, on_epoch_start=on_epoch_start, desc="spatial latent",
                     extra_state=_generator_state(g))
    model.eval()
    with torch.no_grad():
        z_sp, z_sc = model.encode_sp(t_sp).cpu().numpy(), model.encode_sc(t_sc).cpu().numpy()
    curve = tlog["loss_curve"] if tlog else []
    return z_sp, z_sc, {"loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None,
                        "epochs_run": len(curve)}


class LRImputeModule(nn.Module):
    """LR-only decoder: prediction = the spot's pseudo-label + a learned change from its latent code (the change
    starts at zero, so an untrained model returns the kNN mean); owns its loss with the prior terms."""

    def __init__(self, latent_dim: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.net = relu_mlp(latent_dim, hidden, n_out)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return labels + self.net(z)

    def loss(self, z: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, obs: torch.Tensor | None,
             obs_cols: torch.Tensor | None, mu: torch.Tensor, sd: torch.Tensor, *, w_obs: float,
             laplacian: torch.Tensor | None, w_ppi: float, lig_cols: torch.Tensor | None,
             prior: torch.Tensor | None, targets: torch.Tensor | None, w_lt: float) -> dict[str, torch.Tensor]:
        y = self(z, labels)
        m = mask.float()
        terms = {"knn": (((y - labels) ** 2) * m).sum() / m.sum().clamp(min=1)}
        if obs is not None and obs_cols is not None and w_obs > 0 and len(obs_cols):
            terms["obs"] = w_obs * ((y[:, obs_cols] - obs) ** 2).mean()
        ys = (y - mu) / sd
        if laplacian is not None and w_ppi > 0:
            terms["ppi"] = w_ppi * ((ys @ laplacian) * ys).sum(1).mean() / ys.shape[1]
        if prior is not None and targets is not None and lig_cols is not None and w_lt > 0 and targets.shape[1]:
            t_hat = ys[:, lig_cols] @ prior  # spots x targets
            t_hat = t_hat - t_hat.mean(0, keepdim=True)
            t_obs = targets - targets.mean(0, keepdim=True)
            corr = (t_hat * t_obs).sum(0) / (t_hat.norm(dim=0) * t_obs.norm(dim=0)).clamp(min=1e-8)
            weight = prior.sum(0)
            terms["lt"] = w_lt * ((1 - corr) * weight).sum() / weight.sum().clamp(min=1e-8)
        terms["total"] = sum(terms.values())
        return terms


@dataclass
class ImputeInputs:
    """What lrimpute trains on for one spatial slide (held-out genes already removed from ``obs``/``targets``)."""

    z_sp: np.ndarray  # spots x latent
    labels: np.ndarray  # spots x output genes (pseudo-labels, log1p scale)
    mask: np.ndarray  # spots x output genes (bool)
    out_genes: list[str]
    obs: np.ndarray | None = None  # spots x measured LR genes (log1p, spatial scale)
    obs_genes: list[str] | None = None
    laplacian: np.ndarray | None = None  # over out_genes
    prior: np.ndarray | None = None  # ligands x targets
    ligands: list[str] | None = None
    targets: np.ndarray | None = None  # spots x target genes (log1p, spatial)


def fit_lrimpute(inp: ImputeInputs, params: SpatialParams, *, checkpoint: str | None = None
                 ) -> tuple[LRImputeModule, dict[str, Any]]:
    """The LR-only decoder on one slide's inputs, trained by the shared loop (a full pass over the spots per epoch;
    a last batch of one spot is skipped), checkpointed to ``checkpoint`` and resumed from it."""
    from pertpipe.core.training import train
    from pertpipe.io import pick_device

    torch.manual_seed(params.seed)
    g = _generator(params.seed + 1)
    dev = pick_device(params.device, field="spatial.model.device")
    col = {gname: j for j, gname in enumerate(inp.out_genes)}
    model = LRImputeModule(inp.z_sp.shape[1], params.hidden, len(inp.out_genes)).to(dev)
    t = {k_: v.to(dev) if isinstance(v, torch.Tensor) else v for k_, v in _impute_tensors(inp, params, col).items()}
    bs = params.batch_size
    starts = [s_ for s_ in range(0, len(t["z"]), bs) if min(bs, len(t["z"]) - s_) >= 2]
    ep: dict[str, Any] = {}

    def on_epoch_start(_epoch: int) -> None:
        ep.update(perm=torch.randperm(len(t["z"]), generator=g).to(dev), step=0)

    def step(_gen, _epoch):
        b = ep["perm"][starts[ep["step"]]:starts[ep["step"]] + bs]
        ep["step"] += 1
        terms = model.loss(t["z"][b], t["labels"][b], t["mask"][b], t["obs"][b] if t["obs"] is not None else None,
                           t["obs_cols"], t["mu"], t["sd"], w_obs=params.w_obs, laplacian=t["lap"], w_ppi=params.w_ppi,
                           lig_cols=t["lig_cols"], prior=t["prior"],
                           targets=t["targets"][b] if t["targets"] is not None else None, w_lt=params.w_lt)
        return terms["total"], {k_: float(v.detach()) for k_, v in terms.items() if k_ != "total"}, len(b)

    tlog = None
    if params.decoder_epochs > 0 and starts:
        tlog = train(model, param_groups=[{"params": list(model.parameters())}], step=step, validate=None,
                     cfg=_loop_config(params, params.decoder_epochs, len(starts)), seed=params.seed + 1,
                     device=str(dev), checkpoint=checkpoint, on_epoch_start=on_epoch_start, desc="lrimpute",
                     extra_state=_generator_state(g))
    model.cpu().eval()
    curve, parts = (tlog["loss_curve"], tlog["loss_parts"]) if tlog else ([], [])
    per_epoch = [{**p, "total": c} for p, c in zip(parts, curve)]
    return model, {"loss_first": per_epoch[0] if per_epoch else {}, "loss_last": per_epoch[-1] if per_epoch else {},
                   "epochs": params.decoder_epochs}


def _impute_tensors(inp: ImputeInputs, params: SpatialParams, col: dict[str, int]) -> dict[str, Any]:
    """lrimpute's training tensors: latent codes, pseudo-labels, mask, the spot's own measured LR genes (rescaled to
    the labels' per-gene spread), and the prior matrices."""
    labels = torch.from_numpy(inp.labels)
    mu, sd = labels.mean(0), labels.std(0).clamp(min=1e-3)
    obs = obs_cols = None
    if inp.obs is not None and inp.obs_genes:
        cols = [col[gn] for gn in inp.obs_genes]
        o = inp.obs
        o_std = (o - o.mean(0)) / np.where(o.std(0) > 0, o.std(0), 1.0)
        obs = torch.from_numpy((o_std * sd.numpy()[cols] + mu.numpy()[cols]).astype(np.float32))
        obs_cols = torch.tensor(cols, dtype=torch.long)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return torch.from_numpy(a.astype(np.float32)) if a is not None else None

    return {"z": torch.from_numpy(inp.z_sp.astype(np.float32)), "labels": labels, "mu": mu, "sd": sd,
            "mask": torch.from_numpy(inp.mask if params.mask else np.ones_like(inp.mask)), "obs": obs,
            "obs_cols": obs_cols, "lap": tensor(inp.laplacian), "prior": tensor(inp.prior),
            "lig_cols": torch.tensor([col[x] for x in inp.ligands], dtype=torch.long) if inp.ligands else None,
            "targets": tensor(inp.targets)}


def predict_lrimpute(model: LRImputeModule, z_sp: np.ndarray, labels: np.ndarray, mask: np.ndarray | None
                     ) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(z_sp.astype(np.float32)), torch.from_numpy(labels.astype(np.float32))).numpy()
    y = np.clip(y, 0, None)
    if mask is not None:
        y = np.where(mask, y, 0.0)
    return y.astype(np.float32)
