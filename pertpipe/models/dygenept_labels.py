"""DyGenePT's learner on the labels task (PerturbQA): facet cross-attention over the perturbation gene's facets with
queries of the cell line (multi-head), a bilinear read-out against each readout gene (its own facets projected + a
free vector), DE and direction logits, masked BCE; the network is :class:`pertpipe.models.modules.dygenept.LabelAttention`.
With ``label_priors`` it learns a residual over the baselines' cross-fitted scores (knowledge_knn, knowledge_ridge:
their own learners, looked up in the model registry), and blends with the ridge on validation (γ per kind); the epoch
is chosen on a validation share of the training perturbations."""

from __future__ import annotations

from typing import Any

import numpy as np

from pertpipe.data.labels import MISSING, LabelData
from pertpipe.models.base import MODELS
from pertpipe.models.label_learner import (
    PRIOR_PARAMS,
    Knowledge,
    Learner,
    TrainCurve,
    label_targets,
    mean_auc,
    perturbation_folds,
    prior_feature,
    recentre_folds,
    validation_split,
)


class AttentionLearner(Learner):
    """See the module docstring. With ``label_priors`` (default knowledge_knn and knowledge_ridge) the network
    learns a residual over the baselines' scores (logit scale; cross-fitted over 5 folds of perturbations on the
    training rows so the network sees out-of-sample priors, refitted on all training rows for prediction)."""

    name = "dygenept"

    def _tensors(self, perts: np.ndarray, lines: np.ndarray) -> tuple[Any, Any, Any]:
        import torch

        T, M = self.kn.facets(perts)
        idx = np.array([self.line_index.get(str(c), 0) for c in lines])
        return torch.as_tensor(T), torch.as_tensor(M), torch.as_tensor(idx, dtype=torch.long)

    def _basis(self, data: LabelData) -> dict[str, np.ndarray]:
        """[G, hidden] per kind: the leading right singular vectors of the centred training label matrix (unlabelled
        DE = 0, direction = ½), scaled by their singular values over √rows."""
        out = {}
        for kind, codes, fill in (("de", data.de, 0.0), ("dir", data.dir, 0.5)):
            Y = label_targets(codes, fill)
            Y -= Y.mean(0)
            _, S, Vt = np.linalg.svd(Y, full_matrices=False)
            r = min(self.p.label_hidden, len(S))
            B = np.zeros((Y.shape[1], self.p.label_hidden), dtype=np.float32)
            B[:, :r] = (Vt[:r].T * S[:r] / np.sqrt(len(Y))).astype(np.float32)
            out[kind] = B
        return out

    def _prior_fit(self, data: LabelData) -> list[Learner]:
        import types

        out = []
        for name in self.prior_names:
            learner = MODELS[name].label_learner(types.SimpleNamespace(**PRIOR_PARAMS), self.seed)
            learner.fit(data, self.kn)
            out.append(learner)
        return out

    def _prior_raw(self, learners: list[Learner], perts: np.ndarray, lines: np.ndarray) -> dict[str, np.ndarray]:
        """Each prior's scores [n, P, G] per kind, on its own scale (rates, fitted labels)."""
        G = len(self.genes)
        out = {k: np.zeros((len(perts), len(learners), G), dtype=np.float32) for k in ("de", "dir")}
        for j, learner in enumerate(learners):
            out["de"][:, j], out["dir"][:, j] = learner.predict(perts, lines)
        return out

    def _prior_features(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The scores on the scale the network reads (:func:`pertpipe.models.label_learner.prior_feature`)."""
        out = {k: np.empty_like(v) for k, v in raw.items()}
        for k, v in raw.items():
            for j, name in enumerate(self.prior_names):
                out[k][:, j] = prior_feature(name, v[:, j])
        return out

    def _prior_apply(self, learners: list[Learner], perts: np.ndarray, lines: np.ndarray) -> dict[str, np.ndarray]:
        return self._prior_features(self._prior_raw(learners, perts, lines))

    def _crossfit(self, data: LabelData, folds: int = 5) -> dict[str, np.ndarray]:
        """Out-of-fold prior scores of every training row (folds of perturbations), each fold recentred on the
        line's per-gene label mean (:func:`pertpipe.models.label_learner.recentre_folds`)."""
        G = len(self.genes)
        out = {k: np.zeros((len(data.perts), len(self.prior_names), G), dtype=np.float32) for k in ("de", "dir")}
        if not self.prior_names:
            return out
        f = perturbation_folds(data, folds, self.seed)
        for i in range(folds):
            held = f == i
            pr = self._prior_raw(self._prior_fit(data.rows(~held)), data.perts[held], data.lines[held])
            for k in out:
                out[k][held] = pr[k]
        # each fold's scores on the line's per-gene label mean over all rows, as the refitted priors are
        return self._prior_features({k: recentre_folds(v, data, k, f) for k, v in out.items()})

    def _train(self, data: LabelData, priors: dict[str, np.ndarray], epochs: int, val: LabelData | None,
               val_priors: dict[str, np.ndarray] | None) -> tuple[Any, TrainCurve, int]:
        import torch

        from pertpipe.models.modules.dygenept import LabelAttention

        p = self.p
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        T, M, L = self._tensors(data.perts, data.lines)
        Y = {k: torch.as_tensor(np.where(c == MISSING, 0, c), dtype=torch.float32) for k, c in
             (("de", data.de), ("dir", data.dir))}
        W = {k: torch.as_tensor(c != MISSING, dtype=torch.float32) for k, c in (("de", data.de), ("dir", data.dir))}
        P = {k: torch.as_tensor(v) for k, v in priors.items()}
        K, D = T.shape[1:]
        net = LabelAttention(D, K, len(self.genes), len(self.line_index), self.gene_feats, p,
                             len(self.prior_names), self.basis)
        opt = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=p.label_weight_decay)
        curve = TrainCurve([], [], [], [])
        best, best_state, best_epoch = -np.inf, None, epochs
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        for ep in range(1, epochs + 1):
            net.train()
            order = rng.permutation(len(T))
            tot = 0.0
            for s in range(0, len(order), p.label_batch):
                b = torch.as_tensor(order[s:s + p.label_batch])
                out, _ = net(T[b], M[b], L[b], {k: v[b] for k, v in P.items()})
                loss = sum(bce(out[k], Y[k][b], weight=W[k][b], reduction="sum") / W[k][b].sum().clamp(min=1)
                           for k in ("de", "dir"))
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(b)
            curve.epochs.append(ep)
            curve.loss.append(round(tot / len(T), 5))
            if val is not None:
                v = self._validate(val, self._net_predict(net, val.perts, val.lines, val_priors))
                curve.val_auc_de.append(round(v["auc_de"], 5))
                curve.val_auc_dir.append(round(v["auc_dir"], 5))
                score = v["auc_de"] + self.p.label_dir_weight * v["auc_dir"]
                if score > best:
                    best, best_epoch = score, ep
                    best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
                elif ep - best_epoch >= p.label_patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        return net, curve, best_epoch

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        import torch

        torch.set_num_threads(max(1, threads))
        self.genes = data.genes
        self.kn = kn
        self.prior_names = [] if self.p.prior == "none" else list(self.p.label_priors)
        self.line_index = {str(c): i for i, c in enumerate(np.unique(data.lines))}
        self.gene_feats, _ = kn.pooled(data.genes)
        self.basis = self._basis(data) if self.p.label_gene_basis == "svd" else None
        priors = self._crossfit(data)
        tr, va = validation_split(data, self.p.label_val_fraction, self.seed)
        sub = {k: v[tr] for k, v in priors.items()}
        vpr = {k: v[va] for k, v in priors.items()}
        net, curve, best_epoch = self._train(data.rows(tr), sub, self.p.label_epochs,
                                             data.rows(va) if va.any() else None, vpr)
        log = {"best_epoch": best_epoch, "curve": curve.as_dict(), "refit": bool(self.p.label_refit),
               "priors": self.prior_names}
        self.blend = self._choose_blend(net, data.rows(va), vpr) if va.any() else {}
        log["blend"] = self.blend
        if self.p.label_refit:  # the chosen number of epochs on every training perturbation
            net, _, _ = self._train(data, priors, best_epoch, None, None)
        self.net = net
        self.priors = self._prior_fit(data)
        return log

    BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)

    def _choose_blend(self, net: Any, val: LabelData, val_priors: dict[str, np.ndarray]) -> dict[str, Any]:
        """The network's share γ per kind against the ridge prior's score, on the validation share of the training
        perturbations: score = γ·network + (1 - γ)·ridge (γ = 0: the ridge itself, so the head ends no worse than
        the ridge on validation). The validation AUC of every γ is logged."""
        if "knowledge_ridge" not in self.prior_names:
            return {}
        j = self.prior_names.index("knowledge_ridge")
        net_de, net_dir = self._net_predict(net, val.perts, val.lines, val_priors)
        out: dict[str, Any] = {}
        for kind, codes, score in (("de", val.de, net_de), ("dir", val.dir, net_dir)):
            ridge = val_priors[kind][:, j]
            aucs = {g: mean_auc(codes, g * score + (1 - g) * ridge) for g in self.BLEND_GRID}
            best = max(self.BLEND_GRID, key=lambda g: (aucs[g], g))
            out[kind] = {"gamma": best, "val_auc_by_gamma": {f"{g:g}": round(float(a), 5) for g, a in aucs.items()}}
        return out

    def _blended(self, scores: tuple[np.ndarray, np.ndarray], priors: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
        blend = getattr(self, "blend", None) or {}
        if not blend:
            return scores
        j = self.prior_names.index("knowledge_ridge")
        return tuple(blend[k]["gamma"] * s + (1 - blend[k]["gamma"]) * priors[k][:, j]
                     for k, s in zip(("de", "dir"), scores))

    def _net_predict(self, net: Any, perts: np.ndarray, lines: np.ndarray, priors: dict[str, np.ndarray] | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        net.eval()
        outs: dict[str, list] = {"de": [], "dir": []}
        with torch.no_grad():
            for s in range(0, len(perts), 256):
                T, M, L = self._tensors(perts[s:s + 256], lines[s:s + 256])
                pr = None if priors is None else {k: torch.as_tensor(v[s:s + 256]) for k, v in priors.items()}
                out, _ = net(T, M, L, pr)
                for k in outs:
                    outs[k].append(out[k].numpy())
        G = len(self.genes)
        return tuple(np.concatenate(outs[k]) if outs[k] else np.zeros((0, G), np.float32) for k in ("de", "dir"))

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        priors = self._prior_apply(self.priors, perts, lines)
        return self._blended(self._net_predict(self.net, perts, lines, priors), priors)

    def attention(self, perts: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """[rows, heads, facets] attention weights (which facets each line's queries read)."""
        import torch

        self.net.eval()
        with torch.no_grad():
            T, M, L = self._tensors(perts, lines)
            _, a = self.net.embed(T, M, L)
        return a.numpy()

    def state(self) -> dict[str, Any]:
        return {"genes": self.genes, "line_index": self.line_index, "gene_feats": self.gene_feats,
                "basis": self.basis, "prior_names": self.prior_names, "priors": [pl.state() for pl in self.priors],
                "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "blend": getattr(self, "blend", {})}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        import types

        from pertpipe.models.modules.dygenept import LabelAttention

        self.genes, self.line_index = list(state["genes"]), dict(state["line_index"])
        self.blend = dict(state.get("blend") or {})
        self.gene_feats = np.asarray(state["gene_feats"], dtype=np.float32)
        self.kn = Knowledge(kn_blob)
        self.prior_names = list(state["prior_names"])
        self.priors = []
        for name, st in zip(self.prior_names, state["priors"]):
            learner = MODELS[name].label_learner(types.SimpleNamespace(**PRIOR_PARAMS), self.seed)
            learner.set_state(st, kn_blob)
            self.priors.append(learner)
        K, D = self.kn.tensor.shape[1:]
        self.basis = state.get("basis")
        self.net = LabelAttention(D, K, len(self.genes), len(self.line_index), self.gene_feats, self.p,
                                  len(self.prior_names), self.basis)
        self.net.load_state_dict(state["net"])
