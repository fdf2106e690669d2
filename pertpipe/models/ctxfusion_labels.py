"""ctxfusion's learner on the labels task (PerturbQA): a signal head (the perturbation's labels and DE rate in the
other lines, and the cross-line transfer ridge's score, :mod:`pertpipe.models.label_transfer`), a context head (the
knowledge ridge's cross-fitted score, by line) fused by a head (``label_fusion``): ``sum`` or ``gated``, one weight
per term and line (:class:`pertpipe.models.modules.ctxfusion.LabelGate`, fitted by L-BFGS on the masked BCE), or
``mlp``, an ensemble of small MLPs on the same terms and the line (:class:`~pertpipe.models.modules.ctxfusion.LabelMLP`,
minibatch Adam), so one term's weight can depend on the others. ``benchmarks/bench_label_heads.py`` compares the heads
on validation shares of the training perturbations."""

from __future__ import annotations

from typing import Any

import numpy as np

from pertpipe.data.labels import MISSING, LabelData
from pertpipe.models.knowledge_ridge import RidgeLearner
from pertpipe.models.label_learner import (
    PRIOR_PARAMS,
    Knowledge,
    Learner,
    labelled,
    logit,
    mean_auc,
    perturbation_folds,
    positives,
    prior_feature,
)
from pertpipe.models.label_transfer import LineTransfer


def other_lines(perts: np.ndarray, lines: np.ndarray, q_perts: np.ndarray, q_lines: np.ndarray) -> list[np.ndarray]:
    """For each query row, the stored rows of the same perturbation in another line."""
    by_pert: dict[str, list[int]] = {}
    for i, p in enumerate(perts):
        by_pert.setdefault(str(p), []).append(i)
    return [np.array([i for i in by_pert.get(str(p), []) if lines[i] != c], dtype=int) for p, c in zip(q_perts, q_lines)]


def signal(codes: np.ndarray, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[n, G] mean label in the other lines (NaN where none is labelled) and [n] the DE / up rate there (NaN)."""
    n, G = len(others), codes.shape[1]
    lab = np.full((n, G), np.nan, dtype=np.float32)
    rate = np.full(n, np.nan, dtype=np.float32)
    for r, rows in enumerate(others):
        if len(rows) == 0:
            continue
        c = codes[rows]
        num, den = positives(c).sum(0), labelled(c).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lab[r] = np.where(den > 0, num / np.maximum(den, 1), np.nan)
        if den.sum() > 0:
            rate[r] = num.sum() / den.sum()
    return lab, rate


class FusionLearner(Learner):
    """Linear heads: logit = gate·signal + (1 - gate)·context + b_g (``sum``: gate 1 on both), per line c:
    signal = w₁[c]·(label_o - ½) + w₂[c]·logit(rate_o) + w₀ (terms present only where the other lines have them),
    context = v₁[c]·logit(knowledge ridge score, cross-fitted) + v₀[c], gate = σ(a₀ + a₁·has_label + a₂·has_rate).
    ``mlp``: logit = mean over members of MLP([standardised FEATS terms; one-hot line])."""

    name = "ctxfusion"
    # has_label, label_o - 1/2, has_rate, logit(rate_o), context score, has_transfer, transfer score - 1/2
    FEATS = 7

    def _features(self, codes: np.ndarray, others: list[np.ndarray], ctx: np.ndarray,
                  transfer: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        lab, rate = signal(codes, others)
        has_l = np.isfinite(lab)
        has_r = np.broadcast_to(np.isfinite(rate)[:, None], lab.shape)
        r = np.broadcast_to(logit(np.nan_to_num(rate, nan=0.5))[:, None], lab.shape)
        if transfer is None:
            has_t, t = np.zeros(lab.shape, bool), np.zeros(lab.shape, np.float32)
        else:
            has_t = np.broadcast_to(transfer[1][:, None], lab.shape)
            t = np.where(has_t, transfer[0] - 0.5, 0)
        return np.stack([has_l, np.where(has_l, lab - 0.5, 0), has_r, np.where(has_r, r, 0), ctx, has_t, t],
                        -1).astype(np.float32)

    def _transfer(self, data: LabelData, folds: int, fold: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The cross-line transfer scores of every training row, out of fold (folds of perturbations), and the
        transfer ridges refitted on every row for prediction (:mod:`pertpipe.models.label_transfer`)."""
        out = {k: (np.zeros(data.de.shape, np.float32), np.zeros(len(data.perts), bool)) for k in ("de", "dir")}
        lt = LineTransfer(mean_auc, self.seed)  # one object: the lines' features and Gram matrices are computed once
        for i in range(folds):
            held = fold == i
            lt.fit(data, rows=~held)
            for k in out:
                sc, has = lt.predict(data, k, data.perts[held], data.lines[held])
                out[k][0][held], out[k][1][held] = sc, has
        self.transfer_log = lt.fit(data)
        lt.release()
        self.transfer = lt
        return out

    def heads(self) -> tuple[str, str]:
        """The fusion head of each kind (DE, direction): ``label_fusion``, and ``label_fusion_dir`` unless "same"."""
        d = self.p.label_fusion_dir
        return self.p.label_fusion, self.p.label_fusion if d == "same" else d

    def _net(self, n_lines: int, G: int) -> Any:
        from pertpipe.models.modules.ctxfusion import KindHeads, LabelGate, LabelMLP

        heads = self.heads()
        linear = [h for h in heads if h != "mlp"]
        gate = LabelGate(n_lines, G, linear[0] == "gated") if linear else None
        mlp = (LabelMLP(n_lines, self.FEATS, self.p.label_mlp_hidden, self.p.label_mlp_members)
               if "mlp" in heads else None)
        return KindHeads([mlp if h == "mlp" else gate for h in heads])

    def _fit_head(self, batches: list[tuple[Any, Any, Any, Any]]) -> float:
        """Fit the fusion heads on the labelled pairs of each kind (DE, direction): the linear heads (``sum``,
        ``gated``) by L-BFGS on the summed BCE of their kinds, the MLP by minibatch Adam (:class:`LabelMLP.fit_pairs`)."""
        import torch

        torch.manual_seed(self.seed)
        heads = self.heads()
        self.net = self._net(len(self.line_index), len(self.genes))
        loss = 0.0
        for k, (X, ln, _, y) in enumerate(batches):
            if heads[k] == "mlp":
                loss += self.net.head(k).fit_pairs(k, X, ln, y, epochs=self.p.label_mlp_epochs, batch_size=2048,
                                                    lr=3e-3, seed=self.seed)
        linear = [k for k in range(len(batches)) if heads[k] != "mlp"]
        if not linear:
            return loss
        gate = self.net.head(linear[0])
        opt = torch.optim.LBFGS(gate.parameters(), lr=0.5, max_iter=100, line_search_fn="strong_wolfe")
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def closure() -> Any:
            opt.zero_grad()
            loss = sum(bce(gate(k, X, ln, g), y) for k, (X, ln, g, y) in enumerate(batches) if k in linear)
            loss = loss + 1e-4 * (gate.b[linear] ** 2).sum()
            loss.backward()
            return loss

        return loss + float(opt.step(closure).detach())

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        import types

        import torch

        torch.manual_seed(self.seed)
        self.genes = data.genes
        self.kn = kn
        self.line_index = {str(c): i for i, c in enumerate(np.unique(data.lines))}
        self.store = data
        ridge_p = types.SimpleNamespace(**PRIOR_PARAMS)
        # the context head's knowledge score, out of fold for every training row (folds of perturbations)
        f = perturbation_folds(data, 5, self.seed)
        ctx = {k: np.zeros(data.de.shape, dtype=np.float32) for k in ("de", "dir")}
        for i in range(5):
            held = f == i
            rl = RidgeLearner(ridge_p, self.seed)
            rl.fit(data.rows(~held), kn)
            de, dr = rl.predict(data.perts[held], data.lines[held])
            ctx["de"][held], ctx["dir"][held] = prior_feature("ridge", de), prior_feature("ridge", dr)
        others = other_lines(data.perts, data.lines, data.perts, data.lines)
        self.transfer, self.transfer_log = None, None
        trans = self._transfer(data, 5, f) if self.p.label_transfer and len(self.line_index) > 1 else {}
        line = torch.as_tensor([self.line_index[str(c)] for c in data.lines])
        batches = []
        for kind, codes in (("de", data.de), ("dir", data.dir)):
            X = self._features(codes, others, ctx[kind], trans.get(kind))
            r, g = np.nonzero(codes != MISSING)
            batches.append((torch.as_tensor(X[r, g]), line[r], torch.as_tensor(g),
                            torch.as_tensor(codes[r, g], dtype=torch.float32)))
        self.batches = batches  # the labelled pairs' features (a few MB): benchmarks compare heads on them
        loss = self._fit_head(batches)
        self.ridge = RidgeLearner(ridge_p, self.seed)
        self.ridge.fit(data, kn)
        covered = sum(len(o) > 0 for o in others)
        heads = self.heads()
        out = {"loss": round(loss, 5), "train_rows_with_other_lines": int(covered),
               "fusion": {"de": heads[0], "dir": heads[1]}, "transfer": self.transfer_log}
        linear = [k for k, h in enumerate(heads) if h != "mlp"]
        if linear:
            gate = self.net.head(linear[0])
            out.update(gate=gate.a.detach().numpy().round(3).tolist(),
                       signal_weights=gate.w.detach().numpy().round(3).tolist())
        return out

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        others = other_lines(self.store.perts, self.store.lines, perts, lines)
        de, dr = self.ridge.predict(perts, lines)
        line_i = np.array([self.line_index.get(str(c), 0) for c in lines])
        G = len(self.genes)
        out = []
        with torch.no_grad():
            for k, (codes, c) in enumerate(((self.store.de, de), (self.store.dir, dr))):
                kind = ("de", "dir")[k]
                tr = (self.transfer.predict(self.store, kind, np.asarray(perts), np.asarray(lines))
                      if self.transfer is not None else None)
                X = self._features(codes, others, prior_feature("ridge", c), tr)
                n = len(perts)
                flat = torch.as_tensor(X.reshape(n * G, self.FEATS))
                ln, g = torch.as_tensor(np.repeat(line_i, G)), torch.as_tensor(np.tile(np.arange(G), n))
                step = 1 << 18  # pairs per pass: bounds the MLP head's activations (2¹⁸ x hidden floats)
                s = torch.cat([self.net(k, flat[i:i + step], ln[i:i + step], g[i:i + step])
                               for i in range(0, max(n * G, 1), step)])
                out.append(s.numpy().reshape(n, G))
        return out[0], out[1]

    def state(self) -> dict[str, Any]:
        return {"genes": self.genes, "line_index": self.line_index, "ridge": self.ridge.state(),
                "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
                "de": self.store.de, "dir": self.store.dir, "perts": list(self.store.perts),
                "lines": list(self.store.lines),
                "transfer": self.transfer.state() if self.transfer is not None else None}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        import types

        self.genes, self.line_index = list(state["genes"]), dict(state["line_index"])
        self.ridge = RidgeLearner(types.SimpleNamespace(**PRIOR_PARAMS), self.seed)
        self.ridge.set_state(state["ridge"], kn_blob)
        self.store = LabelData(np.asarray(state["de"], np.int8), np.asarray(state["dir"], np.int8),
                               np.asarray(state["perts"]), np.asarray(state["lines"]), self.genes)
        self.net = self._net(len(self.line_index), len(self.genes))
        self.net.load_state_dict(state["net"])
        self.transfer = LineTransfer.from_state(state["transfer"], mean_auc, self.seed) if state.get("transfer") else None
