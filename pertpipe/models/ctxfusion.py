"""Cross-context transfer: ``context_mean`` (the standard baseline) and ``ctxfusion`` (context–signal gated fusion).

Task: predict how perturbation p acts in a context c* (a cell line, a condition) where p was never measured,
from p's measurements in other contexts and what is known of c* itself (its control cells). Both models read
the per-context statistics of the training split (:mod:`pertpipe.data.zscores`: baselines, mean shifts,
z-scores; stage 1's ``zscores.h5ad``) and work on single-cell data (the response is the log1p shift added to
c*'s control cells) and on L1000 signatures (the response is the z-score signature itself).

* ``context_mean``: p's mean shift over the training contexts (every context weighted alike); a perturbation
  measured nowhere gets the mean over all training groups (the cell-mean baseline).
* ``ctxfusion`` (:class:`pertpipe.models.modules.ctxfusion.CtxFusionModule`): a context head reads c*'s baseline
  as semantics (``context_encoder: pca_mlp``: the baseline's coordinates on the PCA axes of the training cells,
  then an MLP; ``scgpt``: a frozen scGPT encoder over the context's control cells, binned per cell as scGPT
  expects, mean-pooled); a signal head reads p's raw z-scores in the other contexts as numbers (an MLP per
  source context, pooled by mean or by attention with c* as the query); a gate fuses them (``fusion: gated``).
  The decoder adds a change to the residual (p's mean shift over the other contexts = ``context_mean``), so
  the network starts at the baseline and learns where the target context departs from it.
  Ablations, the two designs that failed before: ``fusion: concat`` (a plain MLP over [h_ctx; h_sig], no gate)
  and ``signal_encoder: scgpt_binned_z`` (the z-scores binned like expression and read by a frozen scGPT).

Training examples are the training groups (p, c) with p measured in another training context; the signal of
an example never includes its own context (leave-the-target-context-out), exactly as at prediction time.
A perturbation measured in no training context gets the mean training shift, or (``knowledge_fallback: true``,
which makes the rule pass the knowledge stage's facet tensor) the signal of the training perturbations whose facet
embeddings are nearest; ``predict.json`` says which perturbations took which fallback.
Two phases (the shared loop's schedule): the context MLP is frozen for ``freeze_context_epochs`` and then
trained at ``lr * context_lr_scale``; the scGPT encoder itself stays frozen (its embeddings are computed once).
A context with no control cells in training (L1000 level 5 has no vehicles) has no baseline: its context input
is the mean of the training contexts' (``context_fallbacks`` in the log says how many).

On a labels dataset (PerturbQA, leave one line out) ``ctxfusion`` is :class:`pertpipe.models.ctxfusion_labels.FusionLearner`:
the signal head reads the perturbation's labels and DE rate in the other lines, the context head the knowledge
ridge's (cross-fitted) score with per-line weights, and a gate on what the signal has fuses them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import H5adReader
from pertpipe.core.knn import ranked, softmax_weights, target_vector
from pertpipe.core.params import TrainingParams, fraction, positive
from pertpipe.data.zscores import ContextStats, context_stats
from pertpipe.errors import ConfigError, ContractError
from pertpipe.models.base import PredictsLabels, PredictsShift, PredictsSignatures, register_model
from pertpipe.models.ctxfusion_labels import FusionLearner
from pertpipe.models.inputs import ModelInputs

Z_CLIP = 10.0


def load_stats(inputs: ModelInputs, *, robust: bool = False) -> ContextStats:
    """Stage 1's ``zscores.h5ad`` when the rule passes it (input kind ``context_stats``), else computed from the
    training split."""
    path = inputs.context_stats
    if path and os.path.exists(path):
        s = ContextStats.read(path)
        if robust != s.robust and s.value_kind == "log1p":
            kind = "median/MAD" if s.robust else "mean/sd"
            raise ConfigError(f"{path} holds {kind} z-scores but model_params.ctxfusion.robust_z is {robust}. Fix: "
                              f"set stage1.zscores.robust: {str(robust).lower()} (stage 1 computes them) or "
                              f"robust_z: {str(s.robust).lower()}")
        return s
    return context_stats(inputs.train, robust=robust, chunk_size=inputs.chunk_size)


class _ContextModel(PredictsShift, PredictsSignatures):
    """Serves single cells (a shift added to the target context's controls) and signatures (the signature itself)."""

    tasks = ("cells", "signatures")
    inputs = ("context_stats",)

    def predict_signature(self, target: str, cell_type: str) -> np.ndarray:
        return self.predict_shift(target, cell_type)

    def _setup(self, stats: ContextStats) -> None:
        self.genes = list(stats.genes)
        self.value_kind = stats.value_kind
        self.perts = sorted(stats.groups.target_gene.unique())
        self.contexts = list(stats.contexts)
        P, C, G = len(self.perts), len(self.contexts), len(self.genes)
        pi = {p: i for i, p in enumerate(self.perts)}
        ci = stats.context_index()
        self.shift = np.zeros((P, C, G), dtype=np.float32)
        self.z = np.zeros((P, C, G), dtype=np.float32)
        self.has = np.zeros((P, C), dtype=bool)
        for k, (t, c) in enumerate(zip(stats.groups.target_gene, stats.groups.cell_type)):
            self.shift[pi[t], ci[c]] = stats.shift[k]
            self.z[pi[t], ci[c]] = np.clip(stats.z[k], -Z_CLIP, Z_CLIP)
            self.has[pi[t], ci[c]] = True
        self.global_shift = stats.shift.mean(axis=0).astype(np.float32)
        self.has_controls = np.asarray(stats.control_n) > 0

    def _mean_shift(self, p: int, exclude: int | None = None) -> np.ndarray | None:
        m = self.has[p].copy()
        if exclude is not None:
            m[exclude] = False
        return self.shift[p, m].mean(axis=0) if m.any() else None

    def _state_arrays(self) -> dict[str, Any]:
        return {"perts": self.perts, "contexts": self.contexts, "shift": self.shift, "z": self.z, "has": self.has,
                "global_shift": self.global_shift, "value_kind": self.value_kind, "has_controls": self.has_controls}

    def _set_arrays(self, s: dict[str, Any]) -> None:
        self.perts, self.contexts = list(s["perts"]), list(s["contexts"])
        self.shift, self.z, self.has = (np.asarray(s[k]) for k in ("shift", "z", "has"))
        self.global_shift = np.asarray(s["global_shift"])
        self.value_kind = s["value_kind"]
        self.has_controls = np.asarray(s["has_controls"])


@register_model("context_mean")
class ContextMeanModel(_ContextModel):
    """The target context's control + the perturbation's mean shift over the training contexts."""

    baseline = True

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._setup(load_stats(inputs))
        per = self.has.sum(1)
        return {"fit_s": round(time.perf_counter() - t0, 3), "train_targets": len(self.perts),
                "contexts": len(self.contexts), "contexts_per_target": {"min": int(per.min()), "max": int(per.max())},
                "value_kind": self.value_kind}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        if target == CONTROL_LABEL:
            return np.zeros(len(self.genes))
        if target in self.perts:
            return self._mean_shift(self.perts.index(target))
        return self.global_shift

    def state(self) -> dict[str, Any]:
        return self._state_arrays()

    def set_state(self, state: dict[str, Any]) -> None:
        self._set_arrays(state)


@register_model("ctxfusion")
class CtxFusionModel(_ContextModel, PredictsLabels):
    train_resources = {"mem_mb": 16000, "runtime": 240}
    tasks = ("cells", "signatures", "labels")
    task_inputs = {"labels": ("knowledge",)}
    label_learner = FusionLearner

    @dataclass
    class Params(TrainingParams):
        fusion: Literal["gated", "concat"] = "gated"
        signal_encoder: Literal["mlp", "scgpt_binned_z"] = "mlp"
        context_encoder: Literal["pca_mlp", "scgpt"] = "pca_mlp"
        signal_pool: Literal["mean", "attention"] = "mean"
        residual: Literal["context_mean", "none"] = "context_mean"
        robust_z: bool = False  # median/MAD z-scores; must match stage1.zscores.robust (which computes them)
        d: int = positive(32)
        hidden: int = positive(128)
        pca_dim: int = positive(16)
        pca_cells: int = positive(5000)
        dropout: float = fraction(0.1)
        batch_size: int = positive(32)
        epochs: int = positive(60)
        steps_per_epoch: int = positive(20)
        weight_decay: float = field(default=1e-3, metadata={"ge": 0})
        val_fraction: float = fraction(0.2)
        freeze_context_epochs: int = field(default=0, metadata={"ge": 0})  # phase 1: the context MLP frozen
        context_lr_scale: float = field(default=0.1, metadata={"ge": 0})  # phase 2's learning rate, relative
        scgpt_checkpoint: str | None = None
        scgpt_cells: int = positive(200)  # control cells per context embedded by scGPT
        knowledge_fallback: bool = False  # unseen everywhere: its facet-nearest training perturbations' signal
        fallback_k: int = positive(5)
        fallback_tau: float = field(default=0.05, metadata={"gt": 0})
        # labels task: the fusion head of the DE scores: gated (a gate on what the signal has), sum (signal +
        # context, one weight per term and line) or mlp (an ensemble of small MLPs on the same terms); mlp for DE and
        # sum for direction were chosen on validation shares of each line's training perturbations, leave one line
        # out (benchmarks/bench_label_heads.py; sum had been chosen on K562's before the mlp head existed)
        label_fusion: Literal["gated", "sum", "mlp"] = "mlp"
        # labels task: the direction head, where it differs from label_fusion's ("same": label_fusion's)
        label_fusion_dir: Literal["same", "gated", "sum", "mlp"] = "sum"
        label_mlp_hidden: int = positive(128)  # label_fusion mlp: hidden width, epochs, ensemble members
        label_mlp_epochs: int = positive(6)
        label_mlp_members: int = positive(3)
        # labels task: also the cross-line transfer ridge (pertpipe.models.label_transfer: the perturbation's labels
        # in the other lines over every gene -> its labels in this line) as a signal term
        label_transfer: bool = True

    def reads(self, task: str = "cells") -> tuple[str, ...]:
        """The context statistics, and the facet tensor with ``knowledge_fallback``; on labels the facet tensor."""
        if task in self.task_inputs:
            return self.task_inputs[task]
        return self.inputs + (("knowledge",) if self.params.knowledge_fallback else ())

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        p = self.params
        if "scgpt" in (p.context_encoder, p.signal_encoder.split("_")[0]) and not p.scgpt_checkpoint:
            raise ConfigError("model_params.ctxfusion: context_encoder scgpt / signal_encoder scgpt_binned_z need "
                              "scgpt_checkpoint. Fix: give the folder with scGPT's args.json, vocab.json and "
                              "best_model.pt, or use pca_mlp / mlp")
        if {p.label_fusion, p.label_fusion_dir} == {"gated", "sum"}:  # one linear network serves both kinds
            raise ConfigError(f"model_params.ctxfusion: label_fusion is {p.label_fusion} and label_fusion_dir is "
                              f"{p.label_fusion_dir}; the two linear heads share one network. Fix: give both the "
                              "same linear head, or mlp for one of them")

    # -- features -----------------------------------------------------------------------------------------
    def _context_features(self, train: str | os.PathLike, stats: ContextStats, rng: np.random.Generator,
                          chunk: int) -> np.ndarray:
        """[contexts x f]: what the context head reads (a context without controls: zeros, filled later)."""
        p = self.params
        if p.context_encoder == "scgpt":
            enc = self._scgpt()
            feats = np.zeros((len(self.contexts), enc.dim), dtype=np.float32)
            with H5adReader(train) as r:
                obs = r.obs[["target_gene", "cell_type"]].astype(str)
                for k, c in enumerate(self.contexts):
                    idx = np.flatnonzero(((obs.cell_type == c) & (obs.target_gene == CONTROL_LABEL)).to_numpy())
                    if len(idx) == 0:
                        continue
                    idx = np.sort(rng.choice(idx, size=min(len(idx), p.scgpt_cells), replace=False))
                    m = np.zeros(r.n_obs, bool)
                    m[idx] = True
                    feats[k] = enc.embed(r.read_masked(m, chunk_size=chunk).toarray()).mean(0)
            return feats
        from pertpipe.core.pca import pca_gene_embedding, top_components

        if self.value_kind == "log1p":
            G = pca_gene_embedding(train, k=p.pca_dim, max_cells=p.pca_cells, seed=self.seed)
        else:  # signatures: PCA axes of the signatures themselves
            Zs = stats.z - stats.z.mean(0)
            G = top_components(Zs, p.pca_dim, fix_signs=False).T
        base = stats.baseline
        centre = base[self.has_controls].mean(0) if self.has_controls.any() else np.zeros(base.shape[1])
        f = (base - centre) @ G
        sd = f[self.has_controls].std(0) if self.has_controls.sum() > 1 else np.ones(f.shape[1])
        return (f / np.maximum(sd, 1e-6)).astype(np.float32)

    def _scgpt(self):
        from pertpipe.models.scgpt import ScGPTEncoder

        if getattr(self, "_enc", None) is None:
            self._enc = ScGPTEncoder(self.params.scgpt_checkpoint, self.genes, device="cpu")
        return self._enc

    def _signal_inputs(self) -> np.ndarray:
        """[P, C, f]: the signal head's input per (perturbation, source context): z, or scGPT(binned z)."""
        if self.params.signal_encoder == "mlp":
            return self.z
        enc = self._scgpt()
        out = np.zeros(self.z.shape[:2] + (enc.dim,), dtype=np.float32)
        for p_, c_ in zip(*np.nonzero(self.has)):
            z = self.z[p_, c_]
            # z-scores read as abundances: shifted to be positive, then binned per profile like a cell
            out[p_, c_] = enc.embed((z - z.min() + 1e-3)[None, :])[0]
        return out

    # -- training -------------------------------------------------------------------------------------------
    def _examples(self) -> list[tuple[int, int]]:
        return [(p_, c_) for p_, c_ in zip(*np.nonzero(self.has)) if self.has[p_].sum() > 1]

    def _batch(self, pairs: np.ndarray, *, target: bool) -> dict[str, Any]:
        """Tensors for examples ``pairs`` [(p, c)]: context features of c, sources = p's other contexts."""
        torch = _torch()
        P_, C_ = pairs[:, 0], pairs[:, 1]
        mask = self.has[P_].copy()
        mask[np.arange(len(pairs)), C_] = False
        res = np.zeros((len(pairs), len(self.genes)), dtype=np.float32)
        if self.params.residual == "context_mean":
            w = mask / np.maximum(mask.sum(1, keepdims=True), 1)
            res = np.einsum("bc,bcg->bg", w, self.shift[P_]).astype(np.float32)
        dev = self.device
        b = {"ctx": torch.tensor(self.ctx_feat[C_], device=dev), "z": torch.tensor(self.sig_in[P_], device=dev),
             "mask": torch.tensor(mask, device=dev), "residual": torch.tensor(res, device=dev),
             "src": torch.tensor(np.broadcast_to(self.ctx_feat, (len(pairs),) + self.ctx_feat.shape).copy(),
                                 device=dev)}
        if target:
            b["y"] = torch.tensor(self.shift[P_, C_], device=dev)
        return b

    def fit_profiles(self, inputs: ModelInputs) -> dict[str, Any]:
        torch = _torch()
        from pertpipe.core.training import TrainConfig, validation_targets
        from pertpipe.core.training import train as train_loop
        from pertpipe.io import pick_device
        from pertpipe.models.modules.ctxfusion import CtxFusionModule

        train = inputs.train
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        stats = load_stats(inputs, robust=p.robust_z)
        self._setup(stats)
        self.lookup = None
        if p.knowledge_fallback:
            if inputs.knowledge is None:
                raise ConfigError("model_params.ctxfusion.knowledge_fallback is true but no facet tensor was given. "
                                  "Fix: run the knowledge stage (the rule passes it) or set knowledge_fallback: false")
            from pertpipe.models.facet_lookup import FacetLookup

            self.lookup = FacetLookup.load(inputs.knowledge)
        self.device = pick_device(p.device, field="model_params.ctxfusion.device")
        self.ctx_feat = self._context_features(train, stats, rng, inputs.chunk_size)
        self.context_fallbacks = [c for c, ok in zip(self.contexts, self.has_controls) if not ok]
        self.ctx_feat[~self.has_controls] = (self.ctx_feat[self.has_controls].mean(0) if self.has_controls.any()
                                             else 0.0)
        self.sig_in = self._signal_inputs()
        examples = self._examples()
        if not examples:
            raise ContractError(train, "obs['cell_type']", "no perturbation is measured in two training contexts",
                                "ctxfusion transfers across contexts: give data with several contexts sharing "
                                "perturbations (split: cell_line_holdout)")
        val_perts = validation_targets([self.perts[i] for i in sorted({e[0] for e in examples})], p.val_fraction,
                                       rng, model="ctxfusion", path=train)
        is_val = np.array([self.perts[e[0]] in val_perts for e in examples])
        ex = np.asarray(examples)
        tr, va = ex[~is_val], ex[is_val]
        self.net = CtxFusionModule(len(self.genes), self.ctx_feat.shape[1], self.sig_in.shape[2], d=p.d,
                                   hidden=p.hidden, fusion=p.fusion, pool=p.signal_pool,
                                   dropout=p.dropout).to(self.device)
        ctx_params = list(self.net.ctx.parameters())
        rest = [q for n, q in self.net.named_parameters() if not n.startswith("ctx.")]

        def groups(epoch: int):
            frozen = epoch < p.freeze_context_epochs
            for q in ctx_params:
                q.requires_grad_(not frozen)
            if frozen:
                return [{"params": rest, "lr": p.lr}]
            scale = p.context_lr_scale if p.freeze_context_epochs > 0 else 1.0
            return [{"params": rest, "lr": p.lr}, {"params": ctx_params, "lr": p.lr * scale}]

        def step(gen, _epoch):
            pick = torch.randint(len(tr), (min(p.batch_size, len(tr)),), generator=gen).numpy()
            loss, parts = self.net.loss(self._batch(tr[pick], target=True))
            return loss, parts, len(pick)

        def validate():
            if len(va) == 0:
                return None
            with torch.no_grad():
                loss, _ = self.net.loss(self._batch(va, target=True))
            return float(loss)

        cfg = TrainConfig.from_params(p)
        cfg.amp = False
        log = train_loop(self.net, param_groups=groups, step=step, validate=validate if len(va) else None, cfg=cfg,
                         seed=self.seed, device=self.device, checkpoint=inputs.checkpoint, desc="ctxfusion")
        self.net.eval()
        gate = self.gate_summary()
        return {**log, "fit_s": round(time.perf_counter() - t0, 3), "train_targets": len(self.perts),
                "contexts": len(self.contexts), "train_examples": int(len(tr)), "val_examples": int(len(va)),
                "context_fallbacks": self.context_fallbacks, "value_kind": self.value_kind, "gate": gate}

    def gate_summary(self) -> dict[str, float] | None:
        """Mean and spread of the gate over the training examples (None for ``fusion: concat``)."""
        torch = _torch()
        if self.params.fusion != "gated":
            return None
        ex = np.asarray(self._examples())
        with torch.no_grad():
            b = self._batch(ex, target=False)
            g = self.net(b["ctx"], b["z"], b["mask"], b["residual"], b["src"])["gate"].cpu().numpy()
        return {"mean": float(g.mean()), "sd_over_examples": float(g.mean(1).std()), "min": float(g.min()),
                "max": float(g.max())}

    # -- prediction ------------------------------------------------------------------------------------------
    def _context_row(self, cell_type: str) -> int | None:
        return self.contexts.index(cell_type) if cell_type in self.contexts else None

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        torch = _torch()
        if target == CONTROL_LABEL:
            return np.zeros(len(self.genes))
        c_ = self._context_row(cell_type)
        if target in self.perts:
            p_ = self.perts.index(target)
            sig, shift, mask = self.sig_in[p_], self.shift[p_], self.has[p_].copy()
        else:  # measured in no training context
            borrowed = self._borrow(target)
            if borrowed is None:
                self.notes[target] = "measured in no training context and no facet text: the mean training shift"
                return self.global_shift
            sig, shift, mask = borrowed
        feat = self.ctx_feat.mean(0) if c_ is None or not self.has_controls[c_] else self.ctx_feat[c_]
        if c_ is not None:
            mask[c_] = False  # never read the target context's own measurement
        if not mask.any():
            return self.global_shift
        res = (shift[mask].mean(0) if self.params.residual == "context_mean"
               else np.zeros(len(self.genes), np.float32))
        dev = self.device
        with torch.no_grad():
            out = self.net(torch.tensor(feat[None], device=dev), torch.tensor(sig[None], device=dev),
                           torch.tensor(mask[None], device=dev), torch.tensor(res[None], device=dev),
                           torch.tensor(self.ctx_feat[None], device=dev))
        return out["y"][0].cpu().numpy().astype(np.float64)

    def _borrow(self, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A perturbation measured nowhere (``knowledge_fallback``): the signal, shifts and context mask of a
        softmax(cosine / τ)-weighted mix of the ``fallback_k`` training perturbations whose facet embeddings are
        nearest (:mod:`pertpipe.core.knn`); None without knowledge or facet text."""
        if self.lookup is None:
            return None
        v = target_vector(self.lookup, target)
        if not np.any(v):
            return None
        vecs = np.stack([target_vector(self.lookup, q) for q in self.perts])
        sims = vecs @ v
        near = ranked(sims)[: self.params.fallback_k]
        w = softmax_weights(sims[near], self.params.fallback_tau)
        has = self.has[near]  # [k, C]
        wc = w[:, None] * has
        wc = wc / np.maximum(wc.sum(0, keepdims=True), 1e-12)
        sig = np.einsum("kc,kcf->cf", wc, self.sig_in[near]).astype(np.float32)
        shift = np.einsum("kc,kcg->cg", wc, self.shift[near]).astype(np.float32)
        self.notes[target] = ("measured in no training context: the signal of its facet-nearest training "
                              f"perturbations {[self.perts[i] for i in near]} (weights {np.round(w, 3).tolist()})")
        return sig, shift, has.any(0)

    def profiles_state(self) -> dict[str, Any]:
        return {**self._state_arrays(), "ctx_feat": self.ctx_feat, "sig_in": self.sig_in,
                "net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                "context_fallbacks": self.context_fallbacks,
                "lookup": self.lookup.state() if self.lookup is not None else None}

    def set_profiles_state(self, state: dict[str, Any]) -> None:
        from pertpipe.models.modules.ctxfusion import CtxFusionModule

        p = self.params
        self._set_arrays(state)
        self.ctx_feat, self.sig_in = np.asarray(state["ctx_feat"]), np.asarray(state["sig_in"])
        self.context_fallbacks = list(state.get("context_fallbacks", []))
        self.lookup = None
        if state.get("lookup"):
            from pertpipe.models.facet_lookup import FacetLookup

            self.lookup = FacetLookup.from_state(state["lookup"])
        self.device = "cpu"
        self.net = CtxFusionModule(len(self.genes), self.ctx_feat.shape[1], self.sig_in.shape[2], d=p.d,
                                   hidden=p.hidden, fusion=p.fusion, pool=p.signal_pool, dropout=p.dropout)
        self.net.load_state_dict(state["net"])
        self.net.eval()


def _torch():
    import torch
    return torch
