"""DyGenePT: a gene is K functional facets, and the cell's state decides which facets act.

Network (:class:`pertpipe.models.modules.dygenept.DyGenePTModule`, which owns its losses; the user-facing
:class:`DyGenePTModel` prepares data and calls the shared training loop):

* multifaceted gene encoder: the cached facet tensor M_g [K, D] (frozen) and its mask;
* cell-state querier: PCA of log expression (fitted on training cells) -> MLP -> z_c, or (``querier: scgpt``) a
  frozen scGPT encoder's cell embedding -> MLP (:mod:`pertpipe.models.scgpt`); q_c = LayerNorm(ReLU(W_Q z_c));
* context-aware cross-attention: keys M_g W_K, values M_g W_V, scores q_c K_gᵀ/√d per head, ``<NONE>`` facets
  masked out, sparsemax (or entmax-1.5 / softmax) so irrelevant facets get exactly zero; e_{c,g} = Σ_k α_k V_k;
* perturbation decoder: δ_c = MLP([e_{c,g}, q_c]); latent arithmetic z_pred = z_c + δ_c (doubles: the targets'
  shifts summed plus a learned interaction term); the decoder maps latents to log1p expression and a cell's
  predicted change is Dec(z_pred) - Dec(z_c), added to that control cell.

Loss per (target, cell type) group: MSE between the mean predicted change and the observed pseudobulk change,
plus a distribution term (MMD or energy distance) between predicted and observed perturbed cells in PCA space,
plus a sparsity penalty on α. With ``prior: knn`` (default) the network learns the residual over a knowledge
prior (:mod:`pertpipe.models.prior`: the shift of the training targets whose facet embeddings are nearest,
left out group by group in training), and the prediction is prior + network. (The L1 norm of a sparsemax row is always 1, so the penalty used is the Gini
impurity λ(1 - Σ_k α_k²), which is 0 for one-hot attention and largest for uniform attention.) Unseen targets
are predicted from their facet texts alone.

On a labels dataset (PerturbQA) it is a label head on the same idea (:class:`pertpipe.models.dygenept_labels.AttentionLearner`):
the cell line's ``heads`` queries attend over the perturbation gene's facets (softmax), the pooled facets join
through a linear path, and DE / direction logits are a bilinear read-out against each readout gene (its own facets
projected plus a free vector), with a per-gene bias, a strength term and (``label_priors``) a residual over the
cross-fitted knowledge_knn / knowledge_ridge scores; masked BCE; the epoch is chosen on a validation share of the
training perturbations, then (``label_refit``) the net is refitted on all of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core import distributed
from pertpipe.core.h5io import H5adReader
from pertpipe.core.params import TrainingParams, positive
from pertpipe.core.pca import top_components
from pertpipe.core.training import TrainConfig, stage_checkpoint, train, validation_targets
from pertpipe.errors import ConfigError
from pertpipe.io import pick_device
from pertpipe.models.base import PredictsCellShifts, PredictsLabels, register_model
from pertpipe.models.dygenept_labels import AttentionLearner
from pertpipe.models.facet_lookup import FacetLookup
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.prior import PRIOR_CANDIDATES, BaselinePrior, FacetKNNPrior, fold_unit
from pertpipe.models.shrinkage import check_fraction, check_setting as check_shrinkage
from pertpipe.models.shrinkage import fit_shrinkage, prior_shrinkage
from pertpipe.models.summary import TrainingSummary

RESIDUAL_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)  # γ candidates of the learned residual over the prior
RESIDUAL_MODES = ("gain_facets", "full")  # what residual: auto tries, in this order of preference


def _torch():
    import torch
    return torch


@register_model("dygenept")
class DyGenePTModel(PredictsCellShifts, PredictsLabels):
    supports_ddp = True
    train_resources = {"mem_mb": 16000, "runtime": 720}
    predict_resources = {"mem_mb": 16000, "runtime": 120}
    inputs = ("knowledge",)
    tasks = ("cells", "labels")
    label_learner = AttentionLearner

    @dataclass
    class Params(TrainingParams):
        latent_dim: int = positive(32)
        hidden: int = positive(128)
        attn_dim: int = positive(32)
        heads: int = positive(2)
        normaliser: Literal["sparsemax", "entmax15", "softmax"] = "sparsemax"
        cells_per_group: int = positive(24)
        groups_per_step: int = positive(16)
        epochs: int = positive(40)
        steps_per_epoch: int = positive(20)
        lr: float = field(default=2e-3, metadata={"gt": 0})
        dist_loss: Literal["mmd", "energy", "none"] = "mmd"
        dist_weight: float = field(default=0.05, metadata={"ge": 0})
        attn_sparsity: float = field(default=1e-3, metadata={"ge": 0})
        freeze_querier_epochs: int = field(default=0, metadata={"ge": 0})  # two-phase: a frozen querier first
        querier_lr_scale: float = field(default=0.1, metadata={"ge": 0})
        querier: Literal["pca_mlp", "scgpt"] = "pca_mlp"  # scgpt: a frozen scGPT encoder from scgpt_checkpoint
        scgpt_checkpoint: str | None = None
        scgpt_max_len: int = positive(1200)
        max_cells: int = positive(100_000)
        pca_cells: int = positive(5000)
        shrinkage: Any = "auto"  # auto | none | λ in [0, 1]: toward the training mean shift (models.shrinkage)
        shrinkage_min_groups: int = positive(8)  # held-out groups needed to validate λ (fewer: the model is raw)
        # the network learns a residual over this prior: auto = the baseline with the lowest cross-fitted error on
        # the training groups (models.prior.BaselinePrior), a named baseline, or none (the network alone)
        prior: Literal["auto", "knowledge_ridge", "knn", "linear", "celltype_mean", "additive", "none"] = "auto"
        prior_candidates: list[str] = field(default_factory=lambda: list(PRIOR_CANDIDATES))
        prior_folds: int = positive(5)
        prior_fold_unit: Literal["auto", "target", "group"] = "auto"
        # how the candidates are compared on the cross-fitted training groups: score (avg_score-like: MAE,
        # discrimination, top-gene overlap, each scaled against the cell-mean baseline) or mse
        prior_criterion: Literal["score", "mse"] = "score"
        prior_blend: bool = True  # blends of the two best candidates compete (models.prior.BaselinePrior.choose)
        prior_by_kind: bool = True  # singles and combinations chosen apart where training has enough of both
        residual_scale: Any = "auto"  # auto (validated γ) or a number in [0, 1]: prediction = prior + γ × network
        # what the network adds to the prior: gain_facets = a gain of the prior's shift, per gene and along the
        # cells' principal axes, from the cell state and the state-attended facets; gain = from the state alone;
        # full = also a free change through the facet decoder and read-out; auto (default) = gain_facets and full
        # both trained, the one with the lower validation error kept (docs/models.md)
        residual: Literal["auto", "full", "gain", "gain_facets"] = "auto"
        prior_gain: bool = True  # a learned gain of the prior per cell state, along the cells' principal axes
        prior_k: int = positive(5)
        prior_tau: float = field(default=0.05, metadata={"gt": 0})
        # the labels task (PerturbQA): the label head's own settings (attn_dim, lr and prior are shared with the
        # cells network); defaults chosen on a validation share of K562's training perturbations
        label_hidden: int = positive(64)
        label_heads: int = positive(4)
        label_gene_basis: Literal["none", "svd"] = "none"  # svd: free gene vectors start at the labels' programs
        label_epochs: int = positive(60)
        label_patience: int = positive(8)
        label_batch: int = positive(64)
        label_dropout: float = field(default=0.1, metadata={"ge": 0, "lt": 1})
        label_weight_decay: float = field(default=1e-4, metadata={"ge": 0})
        label_val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})
        label_refit: bool = True
        label_dir_weight: float = field(default=1.0, metadata={"ge": 0})  # direction AUC's weight in the choice
        label_priors: list[str] = field(default_factory=lambda: ["knowledge_knn", "knowledge_ridge"])

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._check()  # at config time: Snakemake builds every configured model while parsing

    # ------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        """What the typed Params cannot say (types, choices and bounds are checked by build_model)."""
        p = self.params
        check_shrinkage(p.shrinkage, model="dygenept")
        check_fraction(p.residual_scale, field="model_params.dygenept.residual_scale", words=("auto",))
        odd = [x for x in p.prior_candidates if x not in PRIOR_CANDIDATES]
        if odd or not p.prior_candidates:
            raise ConfigError(f"model_params.dygenept.prior_candidates: {odd or 'empty'}. Fix: use a non-empty subset "
                              f"of {list(PRIOR_CANDIDATES)}")
        bad = [x for x in p.label_priors if x not in ("knowledge_knn", "knowledge_ridge")]
        if bad:
            raise ConfigError(f"model_params.dygenept.label_priors: {bad} are not label baselines. Fix: use a subset "
                              "of [knowledge_knn, knowledge_ridge] (or [] / prior: none for the network alone)")
        if p.querier == "scgpt" and not p.scgpt_checkpoint:
            raise ConfigError("model_params.dygenept.querier is 'scgpt' but scgpt_checkpoint is not set. Fix: give "
                              "the folder with scGPT's args.json, vocab.json and best_model.pt")

    def _load_knowledge(self, knowledge: Any) -> None:
        self.lookup = FacetLookup.load(knowledge)
        self.facet_names = self.lookup.names
        self.facets = self.lookup.tensor

    def _load_knowledge_state(self, state: dict[str, Any]) -> None:
        self.lookup = FacetLookup.from_state(state)
        self.facet_names = self.lookup.names
        self.facets = self.lookup.tensor

    def _target_facets(self, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.lookup.target(label)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.pca_mean) @ self.pca_components.T).astype(np.float32)

    def _query_input(self, x: np.ndarray, z_pca: np.ndarray) -> np.ndarray:
        """What the querier reads: PCA coordinates (pca_mlp) or the frozen scGPT cell embedding."""
        return self.scgpt.embed(x) if self.params.querier == "scgpt" else z_pca

    def _load_scgpt(self) -> None:
        self.scgpt = None
        if self.params.querier == "scgpt":
            from pertpipe.models.scgpt import ScGPTEncoder

            self.scgpt = ScGPTEncoder(self.params.scgpt_checkpoint, self.genes, device=self.device,
                                      max_len=self.params.scgpt_max_len)

    def _encode_cells(self, train_path: str | os.PathLike, rng: np.random.Generator, chunk: int):
        """PCA of log expression on a subsample, then every kept cell in PCA coordinates and as querier input
        (memory: N x d). Returns (obs of the kept cells, Z, Zq)."""
        p = self.params
        with H5adReader(train_path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str).reset_index(drop=True)
            keep = np.zeros(r.n_obs, bool)
            keep[rng.choice(r.n_obs, size=min(r.n_obs, p.max_cells), replace=False)] = True
            pca_rows = np.zeros(r.n_obs, bool)
            pca_rows[rng.choice(r.n_obs, size=min(r.n_obs, p.pca_cells), replace=False)] = True
            xs = r.read_masked(pca_rows, chunk_size=chunk).toarray()
            self.pca_mean = xs.mean(0, dtype=np.float64)
            xs = xs - self.pca_mean.astype(xs.dtype)
            self.pca_components = top_components(xs, min(p.latent_dim, min(xs.shape) - 1), seed=self.seed)
            del xs
            self.device = distributed.device_for(pick_device(p.device, field="model_params.dygenept.device"))
            self._load_scgpt()
            Z, Zq = [], []
            for _s, _e, b in r.iter_chunks(chunk, rows=keep):
                dense = b.toarray()
                Z.append(self._project(dense))
                Zq.append(self._query_input(dense, Z[-1]))
        return obs[keep].reset_index(drop=True), np.vstack(Z), np.vstack(Zq)

    @staticmethod
    def _groups(summary: TrainingSummary, obs: pd.DataFrame) -> tuple[list[tuple], dict[str, np.ndarray]]:
        """(target, cell type, kept perturbed cells, observed pseudobulk change) with >= 3 cells and >= 3 controls,
        and the kept control cells per cell type."""
        ctrl_idx = {ct: np.flatnonzero(((obs.target_gene == CONTROL_LABEL) & (obs.cell_type == ct)).to_numpy())
                    for ct in obs.cell_type.unique()}
        groups = []
        for (t, ct), _cnt in summary.target_ct_counts.items():
            cells = np.flatnonzero(((obs.target_gene == t) & (obs.cell_type == ct)).to_numpy())
            if len(cells) >= 3 and len(ctrl_idx.get(ct, [])) >= 3:
                delta = (summary.target_ct_means.loc[(t, ct)].to_numpy() -
                         summary.control_ct_means.loc[ct].to_numpy()).astype(np.float32)
                groups.append((t, ct, cells, delta))
        return groups, ctrl_idx

    def _param_groups(self):
        """The two-phase schedule: the querier frozen for ``freeze_querier_epochs``, then at a scaled lr."""
        p = self.params
        querier = list(self.net.querier.parameters())
        rest = [q for name, q in self.net.named_parameters() if not name.startswith("querier.")]

        def groups(epoch):
            if epoch < p.freeze_querier_epochs:
                for q in querier:
                    q.requires_grad_(False)
                return [{"params": rest, "lr": p.lr}]
            for q in querier:
                q.requires_grad_(True)
            scale = p.querier_lr_scale if p.freeze_querier_epochs > 0 else 1.0
            return [{"params": rest, "lr": p.lr}, {"params": querier, "lr": p.lr * scale}]
        return groups

    def fit_profiles(self, inputs: ModelInputs) -> dict[str, Any]:
        """Data preparation (PCA, groups, the knowledge prior) and the shared training loop on the module's loss."""
        torch = _torch()
        from pertpipe.core.training import epoch_generator
        from pertpipe.models.modules.dygenept import DyGenePTModule, GroupSampler

        self._check()
        train_path, knowledge = inputs.train, inputs.need("knowledge", "dygenept")
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._load_knowledge(knowledge)
        chunk = inputs.chunk_size
        summary = TrainingSummary.from_h5ad(train_path, chunk_size=chunk)
        self.genes = summary.genes
        obs, Z, Zq = self._encode_cells(train_path, rng, chunk)
        groups, ctrl_idx = self._groups(summary, obs)
        targets = sorted({g[0] for g in groups})
        val_targets = validation_targets(targets, p.val_fraction, rng, model="dygenept", path=train_path)
        # the prior's training shifts are cross-fitted: each group (validation ones included) gets what it would
        # get unseen, so early stopping, the residual's validated gain and shrinkage judge unseen-like priors
        self.prior = self._fit_prior(summary, train_path)
        self.residual_scale = 1.0
        groups = [(t, ct, cells, delta - self._prior(t, ct, leave_out=(t, ct)).astype(np.float32))
                  for t, ct, cells, delta in groups]  # the network learns the residual over the prior
        fit_groups = [g for g in groups if g[0] not in val_targets]
        val_groups = [g for g in groups if g[0] in val_targets]
        device = self.device
        comps = torch.tensor(self.pca_components.T, dtype=torch.float32, device=device)  # G x d
        sampler = GroupSampler(Z, Zq, ctrl_idx, groups, {t: self._target_facets(t) for t in targets},
                               [self._prior(t, ct, leave_out=(t, ct)) for t, ct, _c, _d in groups],
                               cells_per_group=p.cells_per_group, device=device)

        def step(gen, epoch):
            # every process draws the whole batch (same generator) and computes its share (data-parallel)
            idx = torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()
            lo, hi, weight = distributed.shard(len(idx))
            batch = sampler.batch([fit_groups[i] for i in idx], gen).take(lo, hi)
            loss, parts = self.net.loss(batch, comps=comps, dist_loss=p.dist_loss, dist_weight=p.dist_weight,
                                        attn_sparsity=p.attn_sparsity)
            return loss * weight, parts, 2 * (hi - lo) * p.cells_per_group

        def validate():
            return self.net.residual_mse(sampler.batch(val_groups, epoch_generator(self.seed + 10_007, 0)))

        def fit_mode(mode: str, checkpoint: Any) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
            torch.manual_seed(self.seed)
            self.residual_mode = mode
            self.net = DyGenePTModule(len(self.genes), Zq.shape[1], self.facets.shape[2], p.hidden,
                                      p.attn_dim, p.heads, p.normaliser, gain_dim=self._gain_dim(),
                                      residual=self._residual_mode()).to(device)
            if self.net.gain_dim:
                self.net.comps.copy_(comps)
            tlog = train(self.net, param_groups=self._param_groups(), step=step,
                         validate=validate if val_groups else None, cfg=TrainConfig.from_params(p), seed=self.seed,
                         device=device, checkpoint=checkpoint, desc=f"dygenept ({self._residual_mode()})")
            self.net.eval()
            return self.net, tlog, (self._residual_gain(sampler, val_groups) if val_groups else None)

        modes = list(RESIDUAL_MODES) if (p.residual == "auto" and self.prior is not None and val_groups) else \
            [p.residual if p.residual != "auto" else RESIDUAL_MODES[0]]
        tried = {m: fit_mode(m, stage_checkpoint(inputs.checkpoint, m) if len(modes) > 1 else inputs.checkpoint)
                 for m in modes}
        # the residual chosen on the validation groups: the lowest MSE at its validated γ (ties: the first listed)
        chosen = min(modes, key=lambda m: (tried[m][2]["mse_by_scale"][f"{tried[m][2]['scale']:g}"]
                                           if tried[m][2] else 0.0, modes.index(m)))
        self.net, tlog, gain = tried[chosen]
        self.residual_mode = chosen
        if gain:
            self.residual_scale = gain["scale"]
            gain = {**gain, "by_residual": {m: {"scale": g["scale"], "mse_by_scale": g["mse_by_scale"]}
                                            for m, (_n, _t, g) in tried.items() if g}}
        self.shrinkage = fit_shrinkage(self, train_path, val_targets, setting=prior_shrinkage(p.shrinkage, self.prior),
                                       summary=summary, chunk_size=chunk, min_groups=p.shrinkage_min_groups)
        if self.prior is not None and p.shrinkage == "auto":
            self.shrinkage.how = "none: built on the validated baseline prior (the cell-type mean among its candidates)"
        return {**tlog, "fit_s": round(time.perf_counter() - t0, 3), "train_targets": len(targets),
                "shrinkage": self.shrinkage.log(), "prior": self.prior.log() if self.prior else None,
                "residual_gain": gain, "residual": self._residual_mode(),
                "querier": p.querier, "scgpt_gene_coverage": round(self.scgpt.coverage, 4) if self.scgpt else None,
                "val_targets": sorted(val_targets), "groups": len(groups), "latent_dim": int(self.pca_components.shape[0]),
                "device": device}

    def _residual_mode(self) -> str:
        """``residual`` as it acts (auto: the one chosen in fit); without a prior there is nothing to gain, so the
        network is the full one."""
        if self.prior is None:
            return "full"
        mode = getattr(self, "residual_mode", None) or self.params.residual
        return RESIDUAL_MODES[0] if mode == "auto" else mode

    def _gain_dim(self) -> int:
        """The gain on the prior acts along the cells' principal axes (none without a prior or with prior_gain off)."""
        return int(self.pca_components.shape[0]) if (self.prior is not None and self.params.prior_gain) else 0

    def _fit_prior(self, summary: TrainingSummary, train_path: Any) -> BaselinePrior | None:
        p = self.params
        if p.prior == "none":
            return None
        kw = {"folds": p.prior_folds, "unit": fold_unit(p.prior_fold_unit, train_path), "seed": self.seed,
              "k": p.prior_k, "tau": p.prior_tau, "criterion": p.prior_criterion, "blend": p.prior_blend,
              "by_kind": p.prior_by_kind}
        if p.prior == "auto":
            return BaselinePrior.choose(summary, self.lookup, candidates=tuple(p.prior_candidates), **kw)
        return BaselinePrior.fixed(p.prior, summary, self.lookup, **kw)

    def _residual_gain(self, sampler: Any, val_groups: list[tuple]) -> dict[str, Any]:
        """What the learned residual adds on the validation groups, and its scale γ: pseudobulk-change MSE of the
        prior alone (γ = 0) and of prior + γ × network for each γ of :data:`RESIDUAL_SCALES` (the same drawn cells).
        ``residual_scale: auto`` takes the smallest γ within one standard error of the best (the one-SE rule toward
        the prior, :func:`pertpipe.models.shrinkage.one_se_choice`); at γ = 0 the model *is* its prior baseline."""
        from pertpipe.core.training import epoch_generator
        from pertpipe.models.shrinkage import one_se_choice

        b = sampler.batch(val_groups, epoch_generator(self.seed + 20_011, 0))
        errors = self.net.scaled_residual_errors(b, RESIDUAL_SCALES)
        setting = self.params.residual_scale
        if self.prior is None:  # the network alone: nothing to scale toward
            gamma, mean, how = 1.0, errors.mean(0), "no prior: the network alone"
        elif setting == "auto":
            gamma, mean = one_se_choice(errors, list(RESIDUAL_SCALES))
            how = f"validated on {len(val_groups)} held-out training groups"
        else:
            gamma, mean, how = float(setting), errors.mean(0), "fixed"
        self.residual_scale = float(gamma)
        prior_mse, full_mse = float(mean[0]), float(mean[-1])
        return {"groups": len(val_groups), "prior_mse": round(prior_mse, 8), "model_mse": round(full_mse, 8),
                "reduction": round(1 - full_mse / prior_mse, 4) if prior_mse > 0 else None,
                "mse_by_scale": {f"{g:g}": round(float(e), 8) for g, e in zip(RESIDUAL_SCALES, mean)},
                "scale": self.residual_scale, "how": how}

    def equals(self) -> str | None:
        """The baseline this model's predictions are (γ = 0: the prior alone), else None."""
        prior = getattr(self, "prior", None)  # none on a labels fit (its learner blends with the ridge instead)
        if prior is not None and getattr(self, "residual_scale", 1.0) == 0:
            return prior.display_name
        return None

    # ------------------------------------------------------------------------------------------------
    def _forward_cells(self, target: str, x_ctrl: np.ndarray, prior: np.ndarray | None = None):
        torch = _torch()
        dev = next(self.net.parameters()).device
        f, m, t = (torch.tensor(a, device=dev)[None] for a in self._target_facets(target))
        z = torch.tensor(self._query_input(x_ctrl, self._project(x_ctrl)), device=dev)[None]
        prior = (torch.tensor(prior, dtype=torch.float32, device=dev)[None] if prior is not None else None)
        with torch.no_grad():
            change, alpha = self.net(z, f, m, t, prior)
        return change[0].float().cpu().numpy(), alpha[0].float().cpu().numpy()

    def _prior(self, target: str, cell_type: str, *, leave_out: tuple[str, str] | None = None) -> np.ndarray:
        """The facet-kNN prior shift (zeros with ``prior: none``)."""
        if self.prior is None:
            return np.zeros(len(self.genes))
        return self.prior.shift(target, cell_type, leave_out=leave_out)

    def predict_cell_shifts(self, target: str, cell_type: str, x_ctrl: np.ndarray) -> np.ndarray:
        if target == CONTROL_LABEL:
            return np.zeros_like(x_ctrl)
        prior = self._prior(target, cell_type)
        if self.residual_scale == 0:
            return np.broadcast_to(prior, x_ctrl.shape).copy()
        return self.residual_scale * self._forward_cells(target, x_ctrl, prior)[0] + prior

    def attention(self, target: str, x_ctrl: np.ndarray) -> np.ndarray:
        """Mean attention [K] over cells and heads for the (first) target gene."""
        _change, alpha = self._forward_cells(target, x_ctrl)
        return alpha[:, 0].mean(axis=(0, 1))

    def profiles_state(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()}, "pca_mean": self.pca_mean,
                "pca_components": self.pca_components, **self.lookup.state(),
                "prior": self.prior.state() if self.prior is not None else None,
                "residual_scale": float(self.residual_scale), "residual_mode": self._residual_mode()}

    def set_profiles_state(self, state: dict[str, Any]) -> None:
        self.pca_mean = np.asarray(state["pca_mean"])
        self.pca_components = np.asarray(state["pca_components"])
        self._load_knowledge_state(state)
        self.residual_scale = float(state.get("residual_scale", 1.0))
        self.residual_mode = state.get("residual_mode")
        s_prior = state.get("prior")
        if not s_prior:
            self.prior = None
        elif "name" in s_prior:
            self.prior = BaselinePrior.from_state(s_prior, self.lookup, seed=self.seed)
        else:  # a model.pt from before the validated prior: the facet kNN
            self.prior = FacetKNNPrior.from_state(s_prior, self.lookup)
        p = self.params
        self.device = pick_device(p.device, field="model_params.dygenept.device")
        self._load_scgpt()
        q_dim = self.scgpt.dim if self.scgpt else self.pca_components.shape[0]
        from pertpipe.models.modules.dygenept import DyGenePTModule

        self.net = DyGenePTModule(len(self.genes), q_dim, self.facets.shape[2], p.hidden, p.attn_dim, p.heads,
                                  p.normaliser, gain_dim=self._gain_dim() if "comps" in state["net"] else 0,
                                  residual=self._residual_mode())
        self.net.load_state_dict(state["net"])
        self.net.to(self.device).eval()
