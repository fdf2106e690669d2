"""CFM-VC: an NB-VAE latent space plus conditional flow matching from control to perturbed cells.

Network (:class:`pertpipe.models.modules.cfmvc.CFMVCModule`, which owns the likelihoods and losses; the
user-facing :class:`CFMVCModel` prepares data and runs the training stages):

* **NB-VAE** (scVI style, in torch): the encoder reads log1p of the raw counts with a cell-type embedding for
  the biological block z_int and a batch embedding for the technical block z_tech (both reparameterised, KL to
  N(0, I)); the decoder maps [z_int, z_tech, batch] to per-gene logits -> NB mean softmax(logits) × observed
  library size, with a learned per-gene inverse dispersion θ. **Data without counts** (log1p only, e.g. the Norman
  subset): the encoder reads the log1p matrix and the likelihood is on log1p itself, either a **hurdle** (the
  default fallback: P(x > 0) from one decoder head, x | x > 0 Gaussian with a per-gene variance, which keeps the
  zeros of sparse data) or a plain **Gaussian** (``likelihood: gaussian``). ``likelihood: auto`` picks NB when
  ``layers["counts"]`` exists and ``log1p_fallback`` otherwise.
* **Context encoder** c: batch, cell type and, when the training file has ``obsm["spatial"]``, the (standardised)
  coordinates. **Perturbation encoder** p: each target gene's facet vectors pooled by a learned masked attention
  (so unseen targets get an embedding from their texts), plus a learned per-gene embedding for genes seen as
  targets in training (dropped at rate ``target_dropout`` so the facet path carries weight); a double sums its
  two genes and an MLP (which also sees the number of targets) combines them.
* **Flow field** v(z_t, t | p, c) = base(h) + Σ_j α_j(p, c) · basis_j(h), h = trunk([z_t, time embedding, c]).
* **Conditional flow matching** on the straight path z_t = (1 - t) z_0 + t z_1 with target z_1 - z_0, in the
  standardised z_int space. Source z_0: Gaussian noise (``source: gaussian``) or encoded control cells of the same
  cell type (``source: control``); mini-batch OT pairing (exact assignment per group) with ``ot_pairing``.
* **Sampling**: Euler or midpoint integration with ``n_steps``; decode with the control cell's z_tech and batch.
  ``decode: sample`` draws NB counts at the control cell's library size, library-normalises them to the training
  target sum and takes log1p (log1p fallbacks: draws from the hurdle/Gaussian); ``mean`` uses the decoder's mean;
  ``delta`` adds the decoded change mean(z_1) - mean(z_ctrl) to the drawn control cell. ``paired`` keeps each drawn
  control cell and adds its own change: the generated latents are assigned one-to-one to the controls' latents by
  optimal transport (squared distance; with ``source: control`` each control's own flow), and cell i gains
  m(z_1,σ(i)) - m(z_ctrl,i), m the decoded mean on the log1p scale, so the real cells' noise is kept and the
  response varies by cell state. ``auto`` (default): with a centre, ``sample`` or ``paired``, whichever gives
  the fold changes of the mean expression closer to the real cells' on the validation targets; without one,
  ``delta`` for NB models and ``sample`` for the log1p fallbacks: the choice the model benchmark supports.
* **Centre**: the generated cells are moved to the mean shift of the validated baseline (``centre``), so the flow
  spends itself on the cell-level spread. Two ablations show what the generation adds (``generate``): ``vae``, the
  flow turned off (each drawn control cell's own latent, decoded and sampled by the VAE, then centred), and
  ``none``, no network at all (the drawn control cells moved to the centre's mean). ``benchmarks/bench_real.py``
  scores both beside the full model (rows ``cfmvc_no_flow``, ``cfmvc_no_generation``).

Training (each stage on the shared loop of :mod:`pertpipe.core.training`, each with its own resumable
checkpoint): 1) the VAE; 2) the context/perturbation encoders and the flow on the VAE's detached latents, with an
optional MMD between generated and encoded latents; 3) optionally a joint fine-tune at ``joint_lr_scale``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL, perturbation_genes
from pertpipe.core import distributed
from pertpipe.core.distances import energy_distance
from pertpipe.core.h5io import H5adReader
from pertpipe.core.params import TrainingParams, fraction, positive
from pertpipe.core.training import TrainConfig, epoch_generator, stage_checkpoint, train, validation_targets
from pertpipe.errors import ContractError
from pertpipe.io import pick_device
from pertpipe.models.base import GeneratesCells, register_model
from pertpipe.models.facet_lookup import MAX_TARGETS, FacetLookup
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.prior import PRIOR_CANDIDATES, BaselinePrior, fold_unit
from pertpipe.models.shrinkage import check_setting as check_shrinkage
from pertpipe.models.shrinkage import fit_shrinkage, prior_shrinkage
from pertpipe.models.summary import ControlCells


# -- the model --------------------------------------------------------------------------------------------
@dataclass
class _Data:
    """The kept training cells: their rows on disk (counts for NB, else log1p X; read batch by batch, never the
    whole matrix), library sizes and context indices. The encoder reads log1p counts (NB) or X itself."""

    rows: Any  # pertpipe.core.h5io.RowReader over the kept cells
    enc_log1p: bool
    lib: np.ndarray
    b: np.ndarray
    ct: np.ndarray
    xy: np.ndarray | None
    obs: pd.DataFrame

    def enc_and_target(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense float32 (encoder input, reconstruction target) of kept rows ``rows``, one read from disk."""
        tgt = self.rows[rows].astype(np.float32)
        if not self.enc_log1p:
            dense = tgt.toarray()
            return dense, dense
        x = tgt.copy()
        np.log1p(x.data, out=x.data)
        return x.toarray(), tgt.toarray()


class _Feeder:
    """CFM-VC's training tensors: rows -> tensors, context (with dropout), OT-paired flow batches, the module's
    losses called on them. Every random draw comes from the epoch generator, in a fixed order."""

    def __init__(self, model: CFMVCModel, d: _Data, ctrl_by_ct: dict[str, np.ndarray], targets: dict[str, tuple],
                 dev: str) -> None:
        import torch

        self.model, self.p, self.d, self.dev, self.ctrl_by_ct = model, model.params, d, dev, ctrl_by_ct
        self.tarr = {t: tuple(torch.tensor(a, device=dev) for a in arrays) for t, arrays in targets.items()}
        self.latents = None

    @property
    def net(self):
        return self.model.net

    def set_latents(self, z: np.ndarray) -> None:
        import torch

        self.latents = torch.tensor(z, dtype=torch.float32, device=self.dev)

    def stored(self, rows: np.ndarray):
        return self.latents[rows]

    def enc_in(self, rows: np.ndarray):
        """The encoder input of training ``rows`` as a dense tensor."""
        import torch

        return torch.tensor(self.d.enc_and_target(rows)[0], device=self.dev)

    def enc_and_target(self, rows: np.ndarray):
        """(encoder input, reconstruction target) of training ``rows`` as dense tensors, read from disk once."""
        import torch

        x, tgt = self.d.enc_and_target(rows)
        return torch.tensor(x, device=self.dev), torch.tensor(tgt, device=self.dev)

    def ctx_of(self, rows: np.ndarray, gen=None, share: distributed.Share | None = None):
        """Context indices of ``rows`` (with dropout when ``gen`` is given); ``share``: ``rows`` are this process's
        part of a batch and the dropout draws are made for the whole batch."""
        import torch

        d, dev = self.d, self.dev
        b, ct = torch.tensor(d.b[rows], device=dev), torch.tensor(d.ct[rows], device=dev)
        if gen is not None and self.p.context_dropout > 0:  # learn the "unknown" embeddings
            share = share or distributed.Share.whole(len(rows))
            drop = (share.rand(gen) < self.p.context_dropout).to(dev)
            b, ct = b.masked_fill(drop, 0), ct.masked_fill(drop, 0)
        xy = torch.tensor(d.xy[rows], device=dev) if d.xy is not None else None
        return b, ct, xy

    def vae_loss(self, rows: np.ndarray, gen, beta: float, sample: bool = True):
        """The VAE loss of this process's share of batch ``rows`` (all of it on one process); the random draws
        are the whole batch's, cut to the share."""
        import torch

        share = distributed.Share.of(len(rows)) if gen is not None else distributed.Share.whole(len(rows))
        mine = rows[share.lo:share.hi]
        x_in, tgt = self.enc_and_target(mine)
        b, ct, _ = self.ctx_of(mine, gen, share)
        lib = torch.tensor(self.d.lib[mine], device=self.dev)
        noise = (share.randn(gen, self.p.d_int), share.randn(gen, self.p.d_tech)) if gen is not None and sample \
            else None
        return self.net.vae.loss(x_in, tgt, lib, b, ct, beta=beta, gen=gen, sample=sample, noise=noise)

    def flow_batch(self, sel: list[tuple], gen, latent, share: distributed.Share | None = None):
        """z0, z1 (OT-paired per group), context rows and perturbation arrays for the groups of ``sel`` in
        ``share`` (all of them by default); every group's draws are made, in order, whatever the share."""
        import torch

        p, k, dev = self.p, self.p.cells_per_group, self.dev
        share = share or distributed.Share.whole(len(sel))
        z0s, z1s, rows1, pa = [], [], [], []
        for i, (t, c, idx) in enumerate(sel):
            r1 = idx[torch.randint(len(idx), (k,), generator=gen).numpy()]
            if p.source == "gaussian":
                noise = torch.randn((k, p.d_int), generator=gen)
            else:
                pool = self.ctrl_by_ct[c]
                r0 = pool[torch.randint(len(pool), (k,), generator=gen).numpy()]
            if not share.lo <= i < share.hi:
                continue
            z1 = latent(r1)
            z0 = noise.to(dev) if p.source == "gaussian" else latent(r0)
            if p.ot_pairing:
                from scipy.optimize import linear_sum_assignment

                cost = torch.cdist(z0.detach().float(), z1.detach().float()).pow(2).cpu().numpy()
                _r, col = linear_sum_assignment(cost)
                z1, r1 = z1[torch.as_tensor(col, device=dev)], r1[col]
            z0s.append(z0), z1s.append(z1), rows1.append(r1), pa.append(self.tarr[t])
        arrays = [torch.stack(a) for a in zip(*pa)]
        return torch.cat(z0s), torch.cat(z1s), np.concatenate(rows1), arrays

    def pert_embed(self, arrays, gen, n_rep: int, share: distributed.Share | None = None):
        f, m, s, seen_idx = arrays
        keep = None
        if gen is not None and self.p.target_dropout > 0:
            share = share or distributed.Share.whole(seen_idx.shape[0])
            keep = (share.rand(gen, *seen_idx.shape[1:]) >= self.p.target_dropout).float().to(self.dev)
        return self.net.pert(f, m, s, seen_idx, keep).repeat_interleave(n_rep, 0)

    def flow_loss(self, sel: list[tuple], gen, latent):
        """The flow loss of this process's share of groups ``sel`` (all of them on one process)."""
        p, k = self.p, self.p.cells_per_group
        share = distributed.Share.of(len(sel))
        z0, z1, rows, arrays = self.flow_batch(sel, gen, latent, share)
        c = self.net.context(*self.ctx_of(rows, gen, share.scaled(k)))
        pe = self.pert_embed(arrays, gen, k, share)
        t = share.scaled(k).rand(gen, 1).to(self.dev)
        return self.net.flow_loss(z0, z1, c, pe, t, group_size=k, mmd_weight=p.mmd_weight, mmd_steps=p.mmd_steps)


def centre_cells(cells: np.ndarray, target_mean: np.ndarray, *, iters: int = 30) -> np.ndarray:
    """``cells`` [n x G] moved per gene by an offset o so that, clipped at 0, their mean is ``target_mean`` (>= 0).

    A plain shift by (target - mean) is biased upward on sparse data, where clipping removes the negative part.
    f(o) = mean(clip(x + o, 0)) is convex and increasing, so Newton's method started to the right of the root (o
    with every cell at or above the target) walks down to it monotonically; a gene whose target is 0 ends at 0."""
    x = np.asarray(cells, dtype=np.float64)
    t = np.asarray(target_mean, dtype=np.float64)
    o = t - x.min(0)  # every cell >= t, so f(o) >= t
    for _ in range(iters):
        y = x + o
        f = np.clip(y, 0, None).mean(0)
        slope = (y > 0).mean(0)
        gap = f - t
        step = np.divide(gap, slope, out=np.zeros_like(gap), where=slope > 0)
        if np.abs(gap).max() < 1e-7:
            break
        o -= step
    return np.clip(x + o, 0, None)


@register_model("cfmvc")
class CFMVCModel(GeneratesCells):
    """Generates a row's cells together: its latents come from one flow draw and its change from the row's mean."""
    supports_ddp = True
    train_resources = {"mem_mb": 24000, "runtime": 720}
    predict_resources = {"mem_mb": 16000, "runtime": 120}

    inputs = ("knowledge",)
    uses_counts = True
    uses_spatial = True

    @dataclass
    class Params(TrainingParams):
        steps_per_epoch: int = positive(20)
        likelihood: Literal["auto", "nb", "hurdle", "gaussian"] = "auto"  # auto: nb when layers["counts"] exists
        log1p_fallback: Literal["hurdle", "gaussian"] = "hurdle"  # what auto picks for log1p-only data
        d_int: int = positive(16)
        d_tech: int = positive(4)
        hidden: int = positive(128)
        emb_dim: int = positive(8)
        kl_weight: float = field(default=1.0, metadata={"ge": 0})
        kl_warmup_epochs: int = field(default=5, metadata={"ge": 0})
        context_dropout: float = fraction(0.05)  # training: cell type / batch replaced by "unknown" at this rate
        vae_epochs: int = positive(60)
        vae_batch: int = positive(256)
        flow_epochs: int = positive(40)
        flow_hidden: int = positive(128)
        c_dim: int = positive(16)
        p_dim: int = positive(32)
        n_basis: int = positive(8)
        groups_per_step: int = positive(16)
        cells_per_group: int = positive(32)
        source: Literal["gaussian", "control"] = "gaussian"  # the benchmark's pick: see README
        ot_pairing: bool = True
        target_dropout: float = fraction(0.3)
        mmd_weight: float = field(default=0.0, metadata={"ge": 0})
        mmd_steps: int = positive(4)
        joint_epochs: int = field(default=0, metadata={"ge": 0})
        joint_lr_scale: float = field(default=0.1, metadata={"gt": 0})
        n_steps: int = positive(20)
        solver: Literal["euler", "midpoint"] = "midpoint"
        # auto: delta for NB, sample for log1p data (sample with a centre); paired: each drawn control cell plus
        # the flow's own change for it (the generated latents assigned to the controls' by optimal transport)
        decode: Literal["auto", "sample", "mean", "delta", "paired"] = "auto"
        max_cells: int = positive(100_000)
        use_spatial: bool = True
        shrinkage: Any = "auto"  # auto | none | λ in [0, 1]: toward the training mean shift (models.shrinkage)
        shrinkage_min_groups: int = positive(8)  # held-out groups needed to validate λ (fewer: the model is raw)
        # the generated cells are centred at this predictor's mean shift (the flow gives the cell-level spread):
        # auto = the baseline with the lowest cross-fitted error (models.prior.BaselinePrior), a named one, or none
        centre: Literal["auto", "knowledge_ridge", "knn", "linear", "celltype_mean", "additive", "none"] = "auto"
        centre_candidates: list[str] = field(default_factory=lambda: list(PRIOR_CANDIDATES))
        centre_folds: int = positive(5)
        # how the candidates are compared on the cross-fitted training groups: score (avg_score-like: MAE,
        # discrimination, top-gene overlap, each scaled against the cell-mean baseline) or mse
        centre_criterion: Literal["score", "mse"] = "score"
        centre_blend: bool = True  # blends of the two best candidates compete (models.prior.BaselinePrior.choose)
        centre_by_kind: bool = True  # singles and combinations chosen apart where training has enough of both
        # what makes the cells' spread around the centre (ablations of the generation, each needs a centre):
        # flow = the full model; vae = the flow turned off (each drawn control cell's own latent, decoded and sampled
        # by the VAE); none = no network (the drawn control cells themselves, moved to the centre's mean)
        generate: Literal["flow", "vae", "none"] = "flow"

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self.centre: BaselinePrior | None = None
        self.decode_choice: dict[str, Any] | None = None  # decode auto with a centre: sample or paired, validated
        self._check()  # at config time: Snakemake builds every configured model while parsing

    # -- configuration ------------------------------------------------------------------------------------
    def _check(self) -> None:
        """What the typed Params cannot say (types, choices and bounds are checked by build_model)."""
        check_shrinkage(self.params.shrinkage, model="cfmvc")
        from pertpipe.errors import ConfigError

        odd = [x for x in self.params.centre_candidates if x not in PRIOR_CANDIDATES]
        if odd or not self.params.centre_candidates:
            raise ConfigError(f"model_params.cfmvc.centre_candidates: {odd or 'empty'}. Fix: use a non-empty subset "
                              f"of {list(PRIOR_CANDIDATES)}")
        if self.params.generate != "flow" and self.params.centre == "none":
            raise ConfigError(f"model_params.cfmvc.generate is '{self.params.generate}' (an ablation of the flow) but "
                              "centre is 'none': without the flow nothing would move the cells. Fix: set centre: auto "
                              "(or a named baseline), or generate: flow")

    # -- data -----------------------------------------------------------------------------------------------
    def _read(self, train_path: str | os.PathLike, rng: np.random.Generator, chunk_size: int) -> _Data:
        p = self.params
        with H5adReader(train_path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str).reset_index(drop=True)
            self.genes = [str(g) for g in r.var_names]
            has_counts = "counts" in r.layers()
            if p.likelihood == "nb" and not has_counts:
                raise ContractError(train_path, "layers['counts']", "model_params.cfmvc.likelihood is 'nb' but the "
                                    "training split has no raw counts", "set likelihood: auto (the hurdle model "
                                    "on log1p, for log1p-only data) or give stage 1 a source with counts")
            self.likelihood = p.likelihood if p.likelihood != "auto" else ("nb" if has_counts else p.log1p_fallback)
            self.target_sum = float(((r.uns().get("pertpipe") or {}).get("standardize") or {}).get("target_sum", 1e4))
            keep = np.zeros(r.n_obs, bool)
            keep[rng.choice(r.n_obs, size=min(r.n_obs, p.max_cells), replace=False)] = True
            layer = "counts" if self.likelihood == "nb" else None  # NB: X itself is not needed
            lib = np.concatenate([np.asarray(b.sum(1), dtype=np.float64).ravel()
                                  for _s, _e, b in r.iter_chunks(chunk_size, layer=layer, rows=keep)] or [[]])
            xy = None
            if p.use_spatial and "spatial" in r.obsm_keys():
                xy = r.obsm("spatial")[keep].astype(np.float64)
                self.xy_mean, self.xy_std = xy.mean(0), xy.std(0) + 1e-8
                xy = ((xy - self.xy_mean) / self.xy_std).astype(np.float32)
        obs = obs[keep].reset_index(drop=True)
        self.batches = sorted(obs.batch.unique())
        self.cell_types = sorted(obs.cell_type.unique())
        self.spatial_dim = 0 if xy is None else int(xy.shape[1])
        b = np.array([self._index(self.batches, v) for v in obs.batch], np.int64)
        ct = np.array([self._index(self.cell_types, v) for v in obs.cell_type], np.int64)
        from pertpipe.core.h5io import RowReader

        rows = RowReader(train_path, layer, rows=np.flatnonzero(keep))  # batches are read from disk as drawn
        return _Data(rows, layer == "counts", lib.astype(np.float32), b, ct, xy, obs)

    @staticmethod
    def _index(cats: list[str], value: str) -> int:
        """1-based category index; 0 = not seen in training (the learned 'unknown' embedding)."""
        i = int(np.searchsorted(cats, value))
        return i + 1 if i < len(cats) and cats[i] == value else 0

    def _target_arrays(self, label: str) -> tuple[np.ndarray, ...]:
        f, m, t = self.lookup.target(label)
        s = np.zeros(MAX_TARGETS, np.int64)
        for j, g in enumerate(perturbation_genes(label)[:MAX_TARGETS]):
            s[j] = self.seen.get(g, 0)
        return f, m, t, s

    # -- training -------------------------------------------------------------------------------------------
    def _groups(self, d: _Data, train_path: str | os.PathLike, rng: np.random.Generator):
        """(target, cell type, rows) groups with >= 3 cells and >= 3 controls, the controls per cell type, the
        training targets and the held-out ones (early stopping, shrinkage)."""
        is_ctrl = (d.obs.target_gene == CONTROL_LABEL).to_numpy()
        if not is_ctrl.any():
            raise ContractError(train_path, "obs['target_gene']", "no control cells in the training split",
                                "cfmvc starts from control cells; check stage1.split.control_val_fraction")
        obs = d.obs
        ctrl_by_ct = {c: np.flatnonzero((is_ctrl & (obs.cell_type == c)).to_numpy()) for c in self.cell_types}
        groups = [(t, c, np.asarray(idx)) for (t, c), idx in obs.groupby(["target_gene", "cell_type"]).indices.items()
                  if len(idx) >= 3 and len(ctrl_by_ct.get(c, [])) >= 3]
        targets = sorted({g[0] for g in groups if g[0] != CONTROL_LABEL})
        val_targets = validation_targets(targets, self.params.val_fraction, rng, model="cfmvc", path=train_path)
        return groups, ctrl_by_ct, targets, val_targets

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        """Data preparation, then three stages on the shared loop: the VAE, the flow on its detached latents,
        and (``joint_epochs`` > 0) a joint fine-tune; the networks and their losses live in
        :mod:`pertpipe.models.modules.cfmvc`."""
        import torch

        from pertpipe.models.modules.cfmvc import CFMVCModule

        self._check()
        train_path, knowledge = inputs.train, inputs.need("knowledge", "cfmvc")
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.lookup = FacetLookup.load(knowledge)
        d = self._read(train_path, rng, inputs.chunk_size)
        self.device = dev = distributed.device_for(pick_device(p.device, field="model_params.cfmvc.device"))
        groups, ctrl_by_ct, targets, val_targets = self._groups(d, train_path, rng)
        fit_groups = [g for g in groups if g[0] not in val_targets]
        val_groups = [g for g in groups if g[0] in val_targets]
        # the learned per-gene embedding covers genes targeted in the fitted groups (not the validation targets)
        seen = sorted({g for t, _c, _i in fit_groups for g in perturbation_genes(t)})
        self.seen = {g: i + 1 for i, g in enumerate(seen)}
        self.net = CFMVCModule(len(self.genes), len(self.batches), len(self.cell_types), self.spatial_dim,
                               self.lookup.dim, len(self.seen), p, self.likelihood).to(dev)
        feed = _Feeder(self, d, ctrl_by_ct, {g[0]: self._target_arrays(g[0]) for g in groups}, dev)
        ckpt = inputs.checkpoint
        stages: dict[str, dict[str, Any]] = {}
        self.z_mean, self.z_std = np.zeros(p.d_int), np.ones(p.d_int)
        if p.generate != "none":  # the ablation `none` trains no network: its cells are the drawn controls
            vae_fit, stages["vae"] = self._fit_vae(feed, rng, ckpt)
            self.net.vae.eval()
            Z = self._encode_rows(d, np.arange(len(d.obs)), dev)
            self.z_mean, self.z_std = Z.mean(0), Z.std(0) + 1e-6
            feed.set_latents((Z - self.z_mean) / self.z_std)
        if p.generate == "flow":
            stages["flow"] = self._fit_flow(feed, fit_groups, val_groups, ckpt)
            if p.joint_epochs > 0:
                stages["joint"] = self._fit_joint(feed, vae_fit, fit_groups, val_groups, ckpt)
        self.net.eval()
        self.centre = self._fit_centre(train_path, inputs.chunk_size)
        self.shrinkage = fit_shrinkage(self, train_path, val_targets, setting=prior_shrinkage(p.shrinkage, self.centre), chunk_size=inputs.chunk_size, min_groups=p.shrinkage_min_groups)
        if self.centre is not None and p.shrinkage == "auto":
            self.shrinkage.how = "none: built on the validated baseline prior (the cell-type mean among its candidates)"
        self.decode_choice = None
        if p.decode == "auto" and p.generate == "flow" and self.centre is not None and val_groups:
            self.decode_choice = self._choose_decode(train_path, d, val_groups, rng)
        wall = sum(s["train_wall_s"] for s in stages.values())
        cells = sum(s["cells_seen"] for s in stages.values())
        last = stages[list(stages)[-1]] if stages else {"loss_curve": [], "val_curve": []}
        return {"loss_curve": last["loss_curve"], "val_curve": last["val_curve"], "generate": p.generate,
                "stage_curves": {k_: {"loss": s["loss_curve"], "val": s["val_curve"], "parts": s["loss_parts"]}
                                 for k_, s in stages.items()},
                "stages": {k_: {f: s[f] for f in ("epochs_run", "best_val", "stopped_early", "train_wall_s",
                                                  "cells_per_s")} for k_, s in stages.items()},
                "epochs_run": sum(s["epochs_run"] for s in stages.values()), "train_wall_s": round(wall, 3),
                "cells_seen": cells, "cells_per_s": round(cells / wall, 1) if wall > 0 else None,
                "fit_s": round(time.perf_counter() - t0, 3), "likelihood": self.likelihood, "source": p.source,
                "shrinkage": self.shrinkage.log(), "decode": self.decode_mode, "decode_choice": self.decode_choice,
                "centre": self.centre.log() if self.centre is not None else None,
                "spatial_dim": self.spatial_dim, "train_targets": len(targets), "val_targets": sorted(val_targets),
                "groups": len(groups), "cells": len(d.obs), "device": dev}

    def _choose_decode(self, train_path: Any, d: _Data, val_groups: list[tuple], rng: np.random.Generator,
                       *, max_groups: int = 64, max_cells: int = 100, n_pcs: int = 50) -> dict[str, Any]:
        """``decode: auto`` with a centre: ``sample`` (decoded NB draws, centred) or ``paired`` (each drawn control
        plus the flow's change for it, centred), judged on the real cells of the validation targets (held out of the
        flow's training; the centre was fitted on them too, but both modes share its mean, so they differ only in
        the spread they give it, which is what a DE test and a distance see). The choice is the lower mean absolute
        error of the log2 fold changes of the arithmetic mean expression (expm1 of log1p) against other control
        cells, as the VCC 2026 DE metrics compute fold changes on counts: centred at the same log1p mean, the
        generated spread moves that mean. Logged beside it: the Jaccard
        of the signed significant DE genes (Mann-Whitney U, BH 5 %) and the energy distance in the PCA space of
        training controls."""
        from scipy.stats import false_discovery_control, mannwhitneyu

        from pertpipe.core.h5io import RowReader
        from pertpipe.core.pca import top_components

        controls = ControlCells.load(train_path, counts=self.likelihood == "nb", spatial=bool(self.spatial_dim))
        pools = {k: np.asarray(v) for k, v in controls.obs.groupby(["cell_type", "batch"]).indices.items()}
        by_ct = {k: np.asarray(v) for k, v in controls.obs.groupby("cell_type").indices.items()}
        sample = np.sort(rng.choice(len(controls.obs), min(2000, len(controls.obs)), replace=False))
        ctrl = controls.x[sample].toarray().astype(np.float64)
        mu = ctrl.mean(0)
        axes = top_components(ctrl - mu, n_pcs, seed=self.seed).T
        real_x = RowReader(train_path, rows=d.rows.rows) if d.rows.rows is not None else RowReader(train_path)
        groups = [val_groups[i] for i in np.sort(rng.permutation(len(val_groups))[:max_groups])]

        def signed_de(x: np.ndarray, ref: np.ndarray) -> set[tuple[int, bool]]:
            with np.errstate(invalid="ignore", divide="ignore"):  # genes constant in both: NaN, read as p = 1
                pval = mannwhitneyu(x, ref, axis=0, method="asymptotic").pvalue
            sig = np.flatnonzero(false_discovery_control(np.nan_to_num(pval, nan=1.0)) < 0.05)
            up = x[:, sig].mean(0) > ref[:, sig].mean(0)
            return set(zip(sig.tolist(), up.tolist()))

        def lfc(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
            return np.log2((np.expm1(x).mean(0) + 1e-3) / (np.expm1(ref).mean(0) + 1e-3))

        modes = ("sample", "paired")
        energy: dict[str, list[float]] = {m: [] for m in modes}
        jaccard: dict[str, list[float]] = {m: [] for m in modes}
        lfc_mae: dict[str, list[float]] = {m: [] for m in modes}
        for gi, (target, cell_type, idx) in enumerate(groups):
            idx = np.sort(rng.choice(idx, min(len(idx), max_cells), replace=False))
            batch = str(d.obs.batch.iloc[idx[0]])
            pool = pools.get((cell_type, batch), by_ct.get(cell_type))
            if pool is None or len(pool) < 6:
                continue
            pick = rng.choice(pool, size=len(idx), replace=len(pool) < len(idx))
            rest = np.setdiff1d(pool, pick)  # the DE reference: control cells the prediction did not start from
            rest = rest if len(rest) >= 3 else pool
            ref = controls.x[rng.choice(rest, size=min(len(rest), max_cells), replace=False)].toarray()
            real = real_x[idx].toarray()
            real_de, real_lfc = signed_de(real, ref), lfc(real, ref)
            for mode in modes:
                cells = self._cells(target, cell_type, batch, controls, pick,
                                    np.random.default_rng(np.random.SeedSequence([self.seed, gi])), mode)
                energy[mode].append(float(energy_distance((cells - mu) @ axes, (real - mu) @ axes)))
                lfc_mae[mode].append(float(np.abs(lfc(cells, ref) - real_lfc).mean()))
                pred_de = signed_de(cells, ref)
                union = real_de | pred_de
                jaccard[mode].append(len(real_de & pred_de) / len(union) if union else 1.0)
        n = len(lfc_mae["sample"])

        def means(v: dict[str, list[float]]) -> dict[str, float | None]:
            return {m: round(float(np.mean(x)), 6) if x else None for m, x in v.items()}

        err = means(lfc_mae)
        chosen = "paired" if n and err["paired"] < err["sample"] else "sample"
        return {"chosen": chosen, "lfc_mae": err, "de_jaccard": means(jaccard), "energy_distance": means(energy),
                "groups": n, "how": f"lower mean error of the fold changes of the mean expression against the real "
                                    f"cells of {n} validation groups (DE-gene Jaccard and energy distance logged)"}

    def _fit_centre(self, train_path: Any, chunk_size: int) -> BaselinePrior | None:
        """The predictor whose mean shift the generated cells are centred at (cross-fitted choice on training data)."""
        from pertpipe.models.summary import TrainingSummary

        p = self.params
        if p.centre == "none":
            return None
        summary = TrainingSummary.from_h5ad(train_path, chunk_size=chunk_size)
        kw = {"folds": p.centre_folds, "unit": fold_unit("auto", train_path), "seed": self.seed,
              "criterion": p.centre_criterion, "blend": p.centre_blend,
              "by_kind": p.centre_by_kind}
        if p.centre == "auto":
            return BaselinePrior.choose(summary, self.lookup, candidates=tuple(p.centre_candidates), **kw)
        return BaselinePrior.fixed(p.centre, summary, self.lookup, **kw)

    def equals(self) -> str | None:
        """With decode ``delta`` the centred cells are the drawn controls plus the centre's shift: that baseline; with
        ``generate: none`` they are the drawn controls moved to its mean (its pseudobulk, the controls' spread)."""
        if self.centre is not None and (self.decode_mode == "delta" or self.params.generate == "none"):
            return self.centre.display_name
        return None

    def _fit_vae(self, feed: _Feeder, rng: np.random.Generator, ckpt) -> tuple[np.ndarray, dict[str, Any]]:
        """Stage 1: the VAE, early-stopped on held-out cells' reconstruction. Returns (its training rows, log)."""
        import torch

        p, n = self.params, len(feed.d.obs)
        perm = rng.permutation(n)
        n_val_cells = min(2000, max(1, n // 20)) if n >= 200 else 0
        vae_val, vae_fit = perm[:n_val_cells], perm[n_val_cells:]

        def step(gen, epoch):
            rows = vae_fit[torch.randint(len(vae_fit), (p.vae_batch,), generator=gen).numpy()]
            lo, hi, weight = distributed.shard(len(rows))  # this process's share (data-parallel)
            beta = p.kl_weight * min(1.0, (epoch + 1) / max(1, p.kl_warmup_epochs))
            loss, recon, kl = feed.vae_loss(rows, gen, beta)
            return loss * weight, {"recon_nll_per_gene": float(recon.detach()),
                                   "kl_per_gene": float(kl.detach())}, hi - lo

        def validate():
            with torch.no_grad():
                return float(feed.vae_loss(vae_val, None, p.kl_weight, sample=False)[1])

        log = train(self.net.vae, param_groups=[{"params": list(self.net.vae.parameters())}], step=step,
                    validate=validate if n_val_cells else None,
                    cfg=replace(TrainConfig.from_params(p), epochs=p.vae_epochs), seed=self.seed, device=feed.dev,
                    checkpoint=stage_checkpoint(ckpt, "vae"), desc="cfmvc vae")
        return vae_fit, log

    def _flow_validate(self, feed: _Feeder, val_groups: list[tuple]) -> float:
        """Mean energy distance (standardised latents) between generated and encoded cells of held-out targets."""
        import torch

        k = self.params.cells_per_group
        gen = epoch_generator(self.seed + 10_007, 0)
        with torch.no_grad():
            z0, z1, rows, arrays = feed.flow_batch(val_groups, gen, feed.stored)
            zhat = self.net.integrate(z0, self.net.context(*feed.ctx_of(rows)), feed.pert_embed(arrays, None, k), 8,
                                      "euler")
        zhat, z1 = zhat.double(), z1.double()
        return float(np.mean([float(energy_distance(zhat[i * k:(i + 1) * k], z1[i * k:(i + 1) * k]))
                              for i in range(len(val_groups))]))

    def _fit_flow(self, feed: _Feeder, fit_groups: list[tuple], val_groups: list[tuple], ckpt) -> dict[str, Any]:
        """Stage 2: context/perturbation encoders and the flow on the VAE's detached latents."""
        import torch

        p, net = self.params, self.net

        def step(gen, epoch):
            sel = [fit_groups[i] for i in torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()]
            lo, hi, weight = distributed.shard(len(sel))
            loss, parts = feed.flow_loss(sel, gen, feed.stored)
            return loss * weight, parts, 2 * (hi - lo) * p.cells_per_group

        mods = torch.nn.ModuleDict({"context": net.context, "pert": net.pert, "flow": net.flow})
        return train(mods, param_groups=[{"params": list(mods.parameters())}], step=step,
                     validate=(lambda: self._flow_validate(feed, val_groups)) if val_groups else None,
                     cfg=replace(TrainConfig.from_params(p), epochs=p.flow_epochs), seed=self.seed + 1,
                     device=feed.dev, checkpoint=stage_checkpoint(ckpt, "flow"), desc="cfmvc flow")

    def _fit_joint(self, feed: _Feeder, vae_fit: np.ndarray, fit_groups: list[tuple], val_groups: list[tuple],
                   ckpt) -> dict[str, Any]:
        """Stage 3: VAE and flow fine-tuned together through the encoder at ``joint_lr_scale`` x lr."""
        import torch

        p, net = self.params, self.net
        z_mean = torch.tensor(self.z_mean, dtype=torch.float32, device=feed.dev)
        z_std = torch.tensor(self.z_std, dtype=torch.float32, device=feed.dev)

        def encoded(rows):
            b, ct, _ = feed.ctx_of(rows)
            return (net.vae.encode(feed.enc_in(rows), b, ct)[0] - z_mean) / z_std

        def step(gen, epoch):
            rows = vae_fit[torch.randint(len(vae_fit), (p.vae_batch,), generator=gen).numpy()]
            lo, hi, w_rows = distributed.shard(len(rows))
            vl, recon, _kl = feed.vae_loss(rows, gen, p.kl_weight)
            sel = [fit_groups[i] for i in torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()]
            glo, ghi, w_groups = distributed.shard(len(sel))
            fl, parts = feed.flow_loss(sel, gen, encoded)
            return vl * w_rows + fl * w_groups, {**parts, "recon_nll_per_gene": float(recon.detach())}, \
                (hi - lo) + 2 * (ghi - glo) * p.cells_per_group

        return train(net, param_groups=[{"params": list(net.parameters()), "lr": p.lr * p.joint_lr_scale}],
                     step=step, validate=(lambda: self._flow_validate(feed, val_groups)) if val_groups else None,
                     cfg=replace(TrainConfig.from_params(p), epochs=p.joint_epochs, warmup_epochs=1),
                     seed=self.seed + 2, device=feed.dev, checkpoint=stage_checkpoint(ckpt, "joint"),
                     desc="cfmvc joint")

    def _encode_rows(self, d: _Data, rows: np.ndarray, dev: str, batch: int = 4096) -> np.ndarray:
        """Posterior means of z_int for training rows (no gradient)."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(rows), batch):
                r = rows[i:i + batch]
                x_in = torch.tensor(d.enc_and_target(r)[0], device=dev)
                b, ct = torch.tensor(d.b[r], device=dev), torch.tensor(d.ct[r], device=dev)
                out.append(self.net.vae.encode(x_in, b, ct)[0].float().cpu().numpy())
        return np.vstack(out).astype(np.float64)

    # -- generation -----------------------------------------------------------------------------------------
    def encode(self, x_in: np.ndarray, batch: str, cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means (z_int, z_tech) of cells whose encoder input is ``x_in`` (log1p counts, or log1p X)."""
        import torch

        dev = self.device
        n = x_in.shape[0]
        b = torch.full((n,), self._index(self.batches, batch), device=dev)
        ct = torch.full((n,), self._index(self.cell_types, cell_type), device=dev)
        with torch.no_grad():
            mi, _li, mt, _lt = self.net.vae.encode(torch.tensor(x_in, dtype=torch.float32, device=dev), b, ct)
        return mi.float().cpu().numpy(), mt.float().cpu().numpy()

    def generate_latent(self, target: str, cell_type: str, batch: str, z_ctrl: np.ndarray, *, seed: int = 0,
                        n_steps: int | None = None, solver: str | None = None, xy: np.ndarray | None = None
                        ) -> np.ndarray:
        """z_int of ``target`` cells flowed from control latents ``z_ctrl`` (or from noise: ``source: gaussian``)."""
        import torch

        p, dev = self.params, self.device
        n = z_ctrl.shape[0]
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            if p.source == "gaussian":
                z0 = torch.randn((n, z_ctrl.shape[1]), generator=gen).to(dev)
            else:
                z0 = torch.tensor((z_ctrl - self.z_mean) / self.z_std, dtype=torch.float32, device=dev)
            b = torch.full((n,), self._index(self.batches, batch), device=dev)
            ct = torch.full((n,), self._index(self.cell_types, cell_type), device=dev)
            xy_t = None
            if self.spatial_dim:
                xy = np.zeros((n, self.spatial_dim)) if xy is None else (xy - self.xy_mean) / self.xy_std
                xy_t = torch.tensor(xy, dtype=torch.float32, device=dev)
            c = self.net.context(b, ct, xy_t)
            arrays = [torch.tensor(a, device=dev)[None] for a in self._target_arrays(target)]
            pe = self.net.pert(*arrays).expand(n, -1)
            z1 = self.net.integrate(z0, c, pe, n_steps or p.n_steps, solver or p.solver)
        return z1.float().cpu().numpy() * self.z_std + self.z_mean

    def _decoder_out(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str) -> np.ndarray:
        import torch

        dev = self.device
        b = torch.full((z_int.shape[0],), self._index(self.batches, batch), device=dev)
        with torch.no_grad():
            return self.net.vae.decode(torch.tensor(z_int, dtype=torch.float32, device=dev),
                                       torch.tensor(z_tech, dtype=torch.float32, device=dev), b).float().cpu().numpy()

    def decode_mean(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str) -> np.ndarray:
        """NB: mean proportions (sum 1 per cell); log1p fallbacks: the expected log1p value (>= 0)."""
        out = self._decoder_out(z_int, z_tech, batch)
        if self.likelihood == "gaussian":
            return np.clip(out, 0, None).astype(np.float64)
        if self.likelihood == "hurdle":
            logit_nz, mean = np.split(out.astype(np.float64), 2, axis=1)
            return 1 / (1 + np.exp(-logit_nz)) * np.clip(mean, 0, None)
        rho = np.exp(out - out.max(1, keepdims=True))
        return rho / rho.sum(1, keepdims=True)

    def decode_cells(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str, lib: np.ndarray,
                     rng: np.random.Generator, mode: str | None = None) -> np.ndarray:
        """log1p expression (the data contract) of latents: NB mean -> (sampled counts) -> normalise -> log1p.

        ``mode`` (default ``decode``): ``sample`` draws NB counts at library size ``lib`` (Gaussian: adds the
        learned per-gene noise); ``mean`` takes the mean itself.
        """
        mode = mode or self.decode_mode
        out = self.decode_mean(z_int, z_tech, batch)
        if self.likelihood in ("gaussian", "hurdle"):
            if mode != "sample":
                return out
            sd = np.exp(0.5 * self.net.vae.log_var.detach().float().cpu().numpy())
            if self.likelihood == "gaussian":
                return np.clip(out + rng.standard_normal(out.shape) * sd, 0, None)
            logit_nz, mean = np.split(self._decoder_out(z_int, z_tech, batch), 2, axis=1)
            nonzero = rng.random(mean.shape) < 1 / (1 + np.exp(-logit_nz))
            return np.where(nonzero, np.clip(mean + rng.standard_normal(mean.shape) * sd, 0, None), 0.0)
        rho = out
        if mode != "sample":
            return np.log1p(rho * self.target_sum)
        theta = np.exp(self.net.vae.log_theta.detach().float().cpu().numpy())
        mu = rho * lib[:, None]
        counts = rng.poisson(rng.gamma(theta, mu / theta))  # NB(mu, theta) as a gamma-Poisson mixture
        tot = counts.sum(1, keepdims=True)
        return np.log1p(np.divide(counts * self.target_sum, tot, out=np.zeros(counts.shape), where=tot > 0))

    @property
    def decode_mode(self) -> str:
        """``decode`` with ``auto`` resolved: when the cells are centred at a baseline's shift (the flow gives their
        spread), ``sample`` or ``paired`` as validated at fit time (:meth:`_choose_decode`; ``sample`` where there
        were no validation groups); otherwise delta for NB models, sample for the log1p fallbacks (benchmarked)."""
        if self.params.generate != "flow":
            return "sample"  # the ablations: the controls' own cells (none), or their latents decoded (vae)
        if self.params.decode != "auto":
            return self.params.decode
        if self.centre is not None:
            return self.decode_choice["chosen"] if self.decode_choice else "sample"
        return "delta" if self.likelihood == "nb" else "sample"

    def _encoder_input(self, controls: ControlCells, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.likelihood == "nb":
            if controls.counts is None:
                raise ContractError("train.h5ad", "layers['counts']", "this CFM-VC model was trained on counts but "
                                    "the control cells have none", "predict with the training split it was fitted on")
            c = controls.counts[pick].toarray().astype(np.float32)
            return np.log1p(c), c.sum(1)
        x = controls.x[pick].toarray().astype(np.float32)
        return x, x.sum(1)

    def predict_cells(self, target: str, cell_type: str, batch: str, controls: ControlCells, pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        return self._cells(target, cell_type, batch, controls, pick, rng, self.decode_mode)

    def _cells(self, target: str, cell_type: str, batch: str, controls: ControlCells, pick: np.ndarray,
               rng: np.random.Generator, mode: str) -> np.ndarray:
        """:meth:`predict_cells` with decode ``mode`` (the validated choice tries both candidates)."""
        if target == CONTROL_LABEL:
            return controls.x[pick].toarray()
        if self.params.generate == "none":  # ablation: the drawn controls' own spread, at the centre's mean
            x_ctrl = controls.x[pick].toarray()
            return centre_cells(x_ctrl, np.clip(x_ctrl.mean(0) + self.centre.shift(target, cell_type), 0, None))
        x_in, lib = self._encoder_input(controls, pick)
        z_int, z_tech = self.encode(x_in, batch, cell_type)
        xy = controls.spatial[pick] if (self.spatial_dim and controls.spatial is not None) else None
        if self.params.generate == "vae":  # ablation, the flow turned off: each control cell's own latent
            z1 = z_int
        else:
            z1 = self.generate_latent(target, cell_type, batch, z_int, seed=int(rng.integers(2**62)), xy=xy)
        if mode == "paired":
            x = controls.x[pick].toarray() + self._paired_change(z_int, z1, z_tech, batch)
            if self.centre is None:
                return np.clip(x, 0, None)
            return centre_cells(x, np.clip(controls.x[pick].toarray().mean(0) + self.centre.shift(target, cell_type),
                                           0, None))
        if mode == "delta":
            # The decoded change of the group, added to every drawn control cell. A per-cell change between a
            # generated cell and an unrelated control (the Gaussian source pairs them at random) is mostly noise;
            # on sparse counts its positive half lands on zeros while the negative half is clipped away, so the
            # predicted cells drifted to dense, inflated profiles. The mean over the group has no such bias, and
            # it is taken on the data's scale (sampled counts -> normalise -> log1p), not log1p of the mean.
            x_ctrl = controls.x[pick].toarray()
            if self.centre is not None:  # the centre's shift: the flow's change would only move the mean
                return np.clip(x_ctrl + self.centre.shift(target, cell_type), 0, None)
            change = (self.decode_cells(z1, z_tech, batch, lib, rng, "sample").mean(0)
                      - self.decode_cells(z_int, z_tech, batch, lib, rng, "sample").mean(0))
            return np.clip(x_ctrl + change, 0, None)
        cells = self.decode_cells(z1, z_tech, batch, lib, rng, mode)
        if self.centre is None:
            return cells
        # the generated spread around the centre's pseudobulk: drawn controls' mean + the centre's shift
        target_mean = np.clip(controls.x[pick].toarray().mean(0) + self.centre.shift(target, cell_type), 0, None)
        return centre_cells(cells, target_mean)

    def _paired_change(self, z_ctrl: np.ndarray, z1: np.ndarray, z_tech: np.ndarray, batch: str) -> np.ndarray:
        """Per drawn control cell, the decoded change (log1p scale) to the generated cell assigned to it: with
        ``source: control`` its own flow; from noise, the one-to-one assignment of least total squared distance
        between the standardised latents (the flow's draws are exchangeable, so this picks the plausible map)."""
        if self.params.source == "gaussian" and len(z1) > 1:
            from scipy.optimize import linear_sum_assignment

            a, b = (z_ctrl - self.z_mean) / self.z_std, (z1 - self.z_mean) / self.z_std
            cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            _rows, cols = linear_sum_assignment(cost)
            z1 = z1[cols]
        mean = self.decode_cells(z1, z_tech, batch, np.ones(len(z1)), np.random.default_rng(0), "mean")
        return mean - self.decode_cells(z_ctrl, z_tech, batch, np.ones(len(z1)), np.random.default_rng(0), "mean")

    # -- persistence ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()}, **self.lookup.state(),
                "likelihood": self.likelihood, "target_sum": self.target_sum, "batches": self.batches,
                "cell_types": self.cell_types, "seen": list(self.seen), "z_mean": self.z_mean, "z_std": self.z_std,
                "spatial_dim": self.spatial_dim, "xy_mean": getattr(self, "xy_mean", None),
                "xy_std": getattr(self, "xy_std", None),
                "centre": self.centre.state() if self.centre is not None else None,
                "decode_choice": self.decode_choice}

    def set_state(self, state: dict[str, Any]) -> None:
        self.lookup = FacetLookup.from_state(state)
        self.likelihood, self.target_sum = state["likelihood"], float(state["target_sum"])
        self.batches, self.cell_types = list(state["batches"]), list(state["cell_types"])
        self.seen = {g: i + 1 for i, g in enumerate(state["seen"])}
        self.z_mean, self.z_std = np.asarray(state["z_mean"]), np.asarray(state["z_std"])
        self.spatial_dim = int(state["spatial_dim"])
        self.xy_mean, self.xy_std = state["xy_mean"], state["xy_std"]
        self.centre = (BaselinePrior.from_state(state["centre"], self.lookup, seed=self.seed)
                       if state.get("centre") else None)
        self.decode_choice = state.get("decode_choice")
        self.device = pick_device(self.params.device, field="model_params.cfmvc.device")
        from pertpipe.models.modules.cfmvc import CFMVCModule

        self.net = CFMVCModule(len(self.genes), len(self.batches), len(self.cell_types), self.spatial_dim,
                               self.lookup.dim, len(self.seen), self.params, self.likelihood)
        self.net.load_state_dict(state["net"])
        self.net.to(self.device).eval()
