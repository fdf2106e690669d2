"""The labels task's learners: what a model fits on a labels file (pertpipe.data.labels) and how it scores pairs.

A model that serves the labels task derives from :class:`~pertpipe.models.base.PredictsLabels` and names a learner
here (``label_learner``); the learner fits on the training rows (codes 1 / 0 / -1 per readout gene, DE and
direction) with the knowledge tensor, and scores every readout gene of (perturbation, line) rows. Settings a learner
chooses (k, the ridge α, the epoch) are chosen on a validation share of the *training perturbations*
(``val_fraction``), never on the test rows.

* :class:`KnnLearner` (``knowledge_knn``): the mean label of gene g over the k facet-nearest training perturbations
  of the same line (smoothed toward their overall DE rate where few of them are labelled for g): retrieval.
* :class:`RidgeLearner` (``knowledge_ridge``): ridge from the perturbation's pooled facet embedding to its label
  vector (GenePert / GenePT style), per line.
* :class:`CrossContextLearner` (``xctx_rate``): the perturbation's labels for g in the other lines, else its DE rate
  there (leave-one-line-out only).
* :class:`AttentionLearner` (``dygenept``): facet cross-attention over the perturbation gene's facets with queries of
  the cell line (multi-head), a bilinear read-out against each readout gene (its own facets projected + a free
  vector), DE and direction logits, masked BCE.
* :class:`FusionLearner` (``ctxfusion``): a signal head (the perturbation's labels and DE rate in the other lines), a
  context head (the knowledge ridge's cross-fitted score, by line) and a gate on what the signal has.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from pertpipe.core.ridge import ridge_solve
from pertpipe.data.labels import MISSING, LabelData


# -- knowledge features -----------------------------------------------------------------------------------------
class Knowledge:
    """The knowledge stage's facet tensor, looked up by gene symbol."""

    def __init__(self, blob: dict[str, Any]) -> None:
        self.genes = list(blob["genes"])
        self.index = {g: i for i, g in enumerate(self.genes)}
        self.tensor = np.asarray(blob["tensor"], dtype=np.float32)
        self.mask = np.asarray(blob["mask"], dtype=np.float32)
        self.facet_names = [str(f) for f in (blob.get("facets") or [])]

    @classmethod
    def read(cls, path: Any) -> Knowledge:
        if isinstance(path, dict):
            return cls(path)
        from pertpipe.knowledge.encode import load_facet_tensor

        return cls(load_facet_tensor(path))

    def facets(self, genes: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, K, D] facet vectors and [n, K] mask (zeros for a gene the tensor lacks)."""
        K, D = self.tensor.shape[1:]
        T = np.zeros((len(genes), K, D), dtype=np.float32)
        M = np.zeros((len(genes), K), dtype=np.float32)
        for r, g in enumerate(genes):
            i = self.index.get(str(g))
            if i is not None:
                T[r], M[r] = self.tensor[i], self.mask[i]
        return T, M

    def pooled(self, genes: list[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean of each gene's facet vectors (unit length) and whether it has any text."""
        T, M = self.facets(genes)
        n = M.sum(1, keepdims=True)
        X = (T * M[..., None]).sum(1) / np.maximum(n, 1)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-8)
        return X, n[:, 0] > 0

    def coverage(self, genes: list[str] | np.ndarray) -> dict[str, Any]:
        _, known = self.pooled(genes)
        return {"genes": len(genes), "with_text": int(known.sum()), "fraction": round(float(known.mean()), 4)
                if len(genes) else None}


# -- fast per-gene AUC for choosing settings on validation (the official metric is pertpipe.evaluation.labels) ------
def mean_auc(codes: np.ndarray, scores: np.ndarray) -> float:
    """Mean over genes with both classes of the ROC AUC (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    aucs = []
    for j in range(codes.shape[1]):
        m = codes[:, j] != MISSING
        y = codes[m, j]
        npos = int(y.sum())
        nneg = y.size - npos
        if npos == 0 or nneg == 0:
            continue
        r = rankdata(scores[m, j])
        aucs.append((r[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))
    return float(np.mean(aucs)) if aucs else float("nan")


def validation_split(data: LabelData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a validation share of the training perturbations (a perturbation is wholly in one side)."""
    perts = np.unique(data.perts)
    rng = np.random.default_rng(seed + 7919)
    n_val = max(1, int(round(fraction * len(perts)))) if len(perts) > 4 else 0
    val = set(rng.choice(perts, size=n_val, replace=False)) if n_val else set()
    is_val = np.isin(data.perts, list(val))
    return ~is_val, is_val


def _pos(codes: np.ndarray) -> np.ndarray:
    return (codes == 1).astype(np.float32)


def _lab(codes: np.ndarray) -> np.ndarray:
    return (codes != MISSING).astype(np.float32)


def _row_rate(codes: np.ndarray) -> np.ndarray:
    lab = _lab(codes).sum(1)
    return np.where(lab > 0, _pos(codes).sum(1) / np.maximum(lab, 1), np.nan)


class Learner(ABC):
    """Fit on training rows, score (perturbation, line) rows over ``genes``."""

    name = "learner"

    def __init__(self, params: Any, seed: int) -> None:
        self.p = params
        self.seed = seed
        self.genes: list[str] = []

    @abstractmethod
    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        ...

    @abstractmethod
    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...

    @abstractmethod
    def state(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        ...

    def _validate(self, data: LabelData, pred: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        return {"auc_de": mean_auc(data.de, pred[0]), "auc_dir": mean_auc(data.dir, pred[1])}


# -- knowledge_knn --------------------------------------------------------------------------------------------------
class KnnLearner(Learner):
    name = "knowledge_knn"

    def _store(self, data: LabelData, kn_feats: np.ndarray, known: np.ndarray) -> None:
        self.F, self.known = kn_feats, known
        self.de, self.dir, self.lines = data.de, data.dir, data.lines

    def _scores(self, feats: np.ndarray, known: np.ndarray, lines: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """DE and direction scores of rows (feats, known, lines) from the stored training rows."""
        G = self.de.shape[1]
        out_de = np.zeros((len(feats), G), dtype=np.float32)
        out_dir = np.zeros_like(out_de)
        m = float(self.p.smoothing)
        for line in np.unique(lines):
            pool = np.flatnonzero((self.lines == line) & self.known)
            if len(pool) == 0:
                pool = np.flatnonzero(self.lines == line)
            if len(pool) == 0:
                pool = np.arange(len(self.lines))
            rows = np.flatnonzero(lines == line)
            sims = feats[rows] @ self.F[pool].T
            kk = min(k, len(pool))
            for r, i in enumerate(rows):
                nb = pool[np.argpartition(-sims[r], kk - 1)[:kk]] if known[i] else pool
                for codes, out in ((self.de, out_de), (self.dir, out_dir)):
                    c = codes[nb]
                    num, den = _pos(c).sum(0), _lab(c).sum(0)
                    rate = num.sum() / max(den.sum(), 1)
                    out[i] = (num + m * rate) / (den + m)
        return out_de, out_dir

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        self.genes = data.genes
        tr, va = validation_split(data, self.p.val_fraction, self.seed)
        feats, known = kn.pooled(data.perts)
        choice = {}
        ks = [self.p.k] if self.p.k else list(self.p.k_grid)
        if len(ks) > 1 and va.any():
            self._store(data.rows(tr), feats[tr], known[tr])
            vd = data.rows(va)
            for k in ks:
                choice[str(k)] = self._validate(vd, self._scores(feats[va], known[va], vd.lines, k))["auc_de"]
            self.k = int(max(choice, key=choice.get))
        else:
            self.k = int(ks[0])
        self._store(data, feats, known)
        self.kn = kn
        return {"k": self.k, "validation_auc_de": choice}

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, known = self.kn.pooled(perts)
        return self._scores(feats, known, np.asarray(lines), self.k)

    def state(self) -> dict[str, Any]:
        return {"k": self.k, "F": self.F, "known": self.known, "de": self.de, "dir": self.dir,
                "lines": list(self.lines), "genes": self.genes}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        self.k = int(state["k"])
        self.F, self.known = np.asarray(state["F"]), np.asarray(state["known"], dtype=bool)
        self.de, self.dir = np.asarray(state["de"], dtype=np.int8), np.asarray(state["dir"], dtype=np.int8)
        self.lines, self.genes = np.asarray(state["lines"]), list(state["genes"])
        self.kn = Knowledge(kn_blob)


LABEL_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


# -- knowledge_ridge -----------------------------------------------------------------------------------------------
def _targets(codes: np.ndarray, fill: float) -> np.ndarray:
    return np.where(codes == MISSING, fill, codes).astype(np.float64)


class RidgeLearner(Learner):
    """Per line: W = (XᵀX + αI)⁻¹ Xᵀ(Y - ȳ) on pooled facet features (unlabelled DE pairs count as 0, unlabelled
    direction pairs as 0.5: the perturbation's label vector as PerturbQA's files give it)."""

    name = "knowledge_ridge"

    def _fit_all(self, data: LabelData, X: np.ndarray, alphas: list[float]) -> dict[float, dict[str, Any]]:
        """alpha -> line -> kind -> (W, x̄, ȳ); XᵀY is formed once per line and kind, then solved per α."""
        fits: dict[float, dict[str, Any]] = {a: {} for a in alphas}
        for line in np.unique(data.lines):
            m = data.lines == line
            xm = X[m].mean(0)
            Xc = X[m] - xm
            XtX = Xc.T @ Xc
            for kind, codes, fill in (("de", data.de, 0.0), ("dir", data.dir, 0.5)):
                Y = _targets(codes[m], fill)
                ym = Y.mean(0)
                XtY = Xc.T @ (Y - ym)
                for a in alphas:
                    W = ridge_solve(XtX, XtY, a)
                    fits[a].setdefault(str(line), {})[kind] = (W, xm, ym)
        return fits

    def _apply(self, fits: dict[str, Any], X: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = len(self.genes)
        out = {k: np.zeros((len(X), G), dtype=np.float32) for k in ("de", "dir")}
        for line in np.unique(lines):
            m = lines == line
            f = fits.get(str(line)) or next(iter(fits.values()))  # a line not in training: the first line's map
            for k in out:
                W, xm, ym = f[k]
                out[k][m] = ym + (X[m] - xm) @ W
        return out["de"], out["dir"]

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        self.genes = data.genes
        X, known = kn.pooled(data.perts)
        tr, va = validation_split(data, self.p.val_fraction, self.seed)
        alphas = [self.p.ridge] if self.p.ridge is not None else list(LABEL_ALPHAS)
        choice = {}
        if len(alphas) > 1 and va.any():
            by_alpha = self._fit_all(data.rows(tr), X[tr], alphas)
            for a in alphas:
                choice[f"{a:g}"] = self._validate(data.rows(va), self._apply(by_alpha[a], X[va],
                                                                              data.lines[va]))["auc_de"]
            self.alpha = float(max(choice, key=choice.get))
        else:
            self.alpha = float(alphas[0])
        self.fits = self._fit_all(data, X, [self.alpha])[self.alpha]
        self.kn = kn
        return {"alpha": self.alpha, "validation_auc_de": choice, "perturbations_without_text": int((~known).sum())}

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, _ = self.kn.pooled(perts)
        return self._apply(self.fits, X, np.asarray(lines))

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "genes": self.genes,
                "fits": {ln: {k: [np.asarray(a, dtype=np.float32) for a in v] for k, v in f.items()}
                         for ln, f in self.fits.items()}}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        self.alpha, self.genes = float(state["alpha"]), list(state["genes"])
        self.fits = {ln: {k: tuple(np.asarray(a, dtype=np.float64) for a in v) for k, v in f.items()}
                     for ln, f in state["fits"].items()}
        self.kn = Knowledge(kn_blob)


# -- xctx_rate -----------------------------------------------------------------------------------------------------
class CrossContextLearner(Learner):
    """score(p, line, g) = (Σ other lines' labels of p for g + r) / (n labelled + 1), r = p's DE rate in the other
    lines (the line's mean rate where p is measured in no other line)."""

    name = "xctx_rate"

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        self.genes = data.genes
        self.de, self.dir, self.perts, self.lines = data.de, data.dir, data.perts, data.lines
        n_lines = len(np.unique(data.lines))
        return {"lines": int(n_lines), "note": None if n_lines > 1 else
                "one line: no other line to read, every score is the line's mean rate (use a multi-line dataset)"}

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = len(self.genes)
        out = [np.zeros((len(perts), G), dtype=np.float32) for _ in range(2)]
        by_pert: dict[str, np.ndarray] = {}
        for i, p in enumerate(self.perts):
            by_pert.setdefault(str(p), []).append(i)
        self.covered = 0
        for r, (p, line) in enumerate(zip(perts, lines)):
            rows = np.array([i for i in by_pert.get(str(p), []) if self.lines[i] != line], dtype=int)
            if len(rows):
                self.covered += 1
            for k, codes in enumerate((self.de, self.dir)):
                if len(rows) == 0:
                    same = codes[self.lines == line] if (self.lines == line).any() else codes
                    num, den = _pos(same).sum(0), _lab(same).sum(0)
                    out[k][r] = num.sum() / max(den.sum(), 1)
                    continue
                c = codes[rows]
                num, den = _pos(c).sum(0), _lab(c).sum(0)
                rate = num.sum() / max(den.sum(), 1)
                out[k][r] = (num + rate) / (den + 1)
        return out[0], out[1]

    def state(self) -> dict[str, Any]:
        return {"de": self.de, "dir": self.dir, "perts": list(self.perts), "lines": list(self.lines),
                "genes": self.genes}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        self.de, self.dir = np.asarray(state["de"], dtype=np.int8), np.asarray(state["dir"], dtype=np.int8)
        self.perts, self.lines = np.asarray(state["perts"]), np.asarray(state["lines"])
        self.genes = list(state["genes"])


LEARNERS: dict[str, type[Learner]] = {c.name: c for c in (KnnLearner, RidgeLearner, CrossContextLearner)}


@dataclass
class TrainCurve:
    epochs: list[int]
    loss: list[float]
    val_auc_de: list[float]
    val_auc_dir: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epochs, "loss": self.loss, "val_auc_de": self.val_auc_de, "val_auc_dir": self.val_auc_dir}


def timed(fn: Any) -> Any:
    def wrap(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*a, **k)
        out["fit_s"] = round(time.perf_counter() - t0, 2)
        return out
    return wrap


# -- dygenept: facet cross-attention by cell line, bilinear read-out ------------------------------------------------
def _label_net(D: int, K: int, G: int, n_lines: int, gene_feats: np.ndarray, p: Any, n_priors: int = 0,
               basis: dict[str, np.ndarray] | None = None) -> Any:
    import torch
    from torch import nn

    h, H, hidden = p.attn_dim, p.label_heads, p.label_hidden

    class LabelAttention(nn.Module):
        """z(p, line) = attention of the line's H queries over p's facets (+ a linear path of p's pooled facets);
        logit(p, line, g) = z · u_g + b_g + strength(z), for DE and direction."""

        def __init__(self) -> None:
            super().__init__()
            self.key = nn.Linear(D, h)
            self.value = nn.Linear(D, h)
            self.facet = nn.Parameter(torch.zeros(K, h))
            self.query = nn.Parameter(torch.randn(n_lines, H, h) * 0.1)
            self.mix = nn.Linear(H * h, hidden)
            self.pool = nn.Linear(D, hidden)
            self.drop = nn.Dropout(p.label_dropout)
            self.register_buffer("gene_feats", torch.as_tensor(gene_feats, dtype=torch.float32))
            self.gene_in = nn.ModuleDict({k: nn.Linear(D, hidden) for k in ("de", "dir")})
            # the free gene vectors start at the training labels' leading right singular vectors (a gene's place in
            # the programs the training perturbations share) when a basis is given, else at zero
            self.gene_free = nn.ParameterDict({k: nn.Parameter(
                torch.as_tensor(basis[k], dtype=torch.float32) if basis else torch.zeros(G, hidden))
                for k in ("de", "dir")})
            self.gene_bias = nn.ParameterDict({k: nn.Parameter(torch.zeros(G)) for k in ("de", "dir")})
            self.strength = nn.ModuleDict({k: nn.Linear(hidden, 1) for k in ("de", "dir")})
            self.prior_w = nn.ParameterDict({k: nn.Parameter(torch.ones(n_priors)) for k in ("de", "dir")})

        def embed(self, T: Any, M: Any, line: Any) -> tuple[Any, Any]:
            k = self.key(T) + self.facet  # [B, K, h]
            v = self.value(T)
            q = self.query[line]  # [B, H, h]
            s = torch.einsum("bhd,bkd->bhk", q, k) / h ** 0.5
            s = s.masked_fill(M[:, None, :] <= 0, -1e4)
            a = torch.softmax(s, dim=-1) * (M.sum(1) > 0).float()[:, None, None]
            c = torch.einsum("bhk,bkd->bhd", a, v).reshape(len(T), H * h)
            pooled = (T * M[..., None]).sum(1) / M.sum(1, keepdim=True).clamp(min=1)
            z = self.drop(torch.nn.functional.gelu(self.mix(c) + self.pool(pooled)))
            return z, a

        def forward(self, T: Any, M: Any, line: Any, priors: dict[str, Any] | None = None
                    ) -> tuple[dict[str, Any], Any]:
            z, a = self.embed(T, M, line)
            out = {}
            for kind in ("de", "dir"):
                u = self.gene_in[kind](self.gene_feats) + self.gene_free[kind]  # [G, hidden]
                out[kind] = z @ u.T + self.gene_bias[kind] + self.strength[kind](z)
                if n_priors:  # a residual over the baselines' scores (logit scale) [B, n_priors, G]
                    out[kind] = out[kind] + torch.einsum("bpg,p->bg", priors[kind], self.prior_w[kind])
            return out, a

    return LabelAttention()


PRIOR_PARAMS = dict(k=None, k_grid=(5, 10, 20, 50, 100), smoothing=1.0, val_fraction=0.15, ridge=None)


def _logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 1e-3, 1 - 1e-3)
    return np.log(x / (1 - x)).astype(np.float32)


def _feature(name: str, x: np.ndarray) -> np.ndarray:
    """A baseline's score on a scale the networks read: knn's smoothed rates as logits; the ridge's fitted labels
    (not probabilities: mostly near 0 and sometimes below) scaled linearly, so their order is kept."""
    if name == "knowledge_knn":
        return _logit(x)
    return (np.clip(x, -1.0, 2.0) * 5.0).astype(np.float32)


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
            Y = _targets(codes, fill)
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
            learner = LEARNERS[name](types.SimpleNamespace(**PRIOR_PARAMS), self.seed)
            learner.fit(data, self.kn)
            out.append(learner)
        return out

    def _prior_apply(self, learners: list[Learner], perts: np.ndarray, lines: np.ndarray) -> dict[str, np.ndarray]:
        G = len(self.genes)
        out = {k: np.zeros((len(perts), len(learners), G), dtype=np.float32) for k in ("de", "dir")}
        for j, learner in enumerate(learners):
            de, dr = learner.predict(perts, lines)
            out["de"][:, j], out["dir"][:, j] = _feature(self.prior_names[j], de), _feature(self.prior_names[j], dr)
        return out

    def _crossfit(self, data: LabelData, folds: int = 5) -> dict[str, np.ndarray]:
        """Out-of-fold prior scores of every training row (folds of perturbations)."""
        G = len(self.genes)
        out = {k: np.zeros((len(data.perts), len(self.prior_names), G), dtype=np.float32) for k in ("de", "dir")}
        if not self.prior_names:
            return out
        perts = np.unique(data.perts)
        fold_of = dict(zip(np.random.default_rng(self.seed + 31).permutation(perts), np.arange(len(perts)) % folds))
        f = np.array([fold_of[p] for p in data.perts])
        for i in range(folds):
            held = f == i
            pr = self._prior_apply(self._prior_fit(data.rows(~held)), data.perts[held], data.lines[held])
            for k in out:
                out[k][held] = pr[k]
        return out

    def _train(self, data: LabelData, priors: dict[str, np.ndarray], epochs: int, val: LabelData | None,
               val_priors: dict[str, np.ndarray] | None) -> tuple[Any, TrainCurve, int]:
        import torch

        p = self.p
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        T, M, L = self._tensors(data.perts, data.lines)
        Y = {k: torch.as_tensor(np.where(c == MISSING, 0, c), dtype=torch.float32) for k, c in
             (("de", data.de), ("dir", data.dir))}
        W = {k: torch.as_tensor(c != MISSING, dtype=torch.float32) for k, c in (("de", data.de), ("dir", data.dir))}
        P = {k: torch.as_tensor(v) for k, v in priors.items()}
        K, D = T.shape[1:]
        net = _label_net(D, K, len(self.genes), len(self.line_index), self.gene_feats, p, len(self.prior_names),
                         self.basis)
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

        self.genes, self.line_index = list(state["genes"]), dict(state["line_index"])
        self.blend = dict(state.get("blend") or {})
        self.gene_feats = np.asarray(state["gene_feats"], dtype=np.float32)
        self.kn = Knowledge(kn_blob)
        self.prior_names = list(state["prior_names"])
        self.priors = []
        for name, st in zip(self.prior_names, state["priors"]):
            learner = LEARNERS[name](types.SimpleNamespace(**PRIOR_PARAMS), self.seed)
            learner.set_state(st, kn_blob)
            self.priors.append(learner)
        K, D = self.kn.tensor.shape[1:]
        self.basis = state.get("basis")
        self.net = _label_net(D, K, len(self.genes), len(self.line_index), self.gene_feats, self.p,
                              len(self.prior_names), self.basis)
        self.net.load_state_dict(state["net"])


LEARNERS[AttentionLearner.name] = AttentionLearner


# -- ctxfusion: the perturbation's labels in other lines (signal) and the knowledge score (context), gated -------------
def _other_lines(perts: np.ndarray, lines: np.ndarray, q_perts: np.ndarray, q_lines: np.ndarray) -> list[np.ndarray]:
    """For each query row, the stored rows of the same perturbation in another line."""
    by_pert: dict[str, list[int]] = {}
    for i, p in enumerate(perts):
        by_pert.setdefault(str(p), []).append(i)
    return [np.array([i for i in by_pert.get(str(p), []) if lines[i] != c], dtype=int) for p, c in zip(q_perts, q_lines)]


def _signal(codes: np.ndarray, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[n, G] mean label in the other lines (NaN where none is labelled) and [n] the DE / up rate there (NaN)."""
    n, G = len(others), codes.shape[1]
    lab = np.full((n, G), np.nan, dtype=np.float32)
    rate = np.full(n, np.nan, dtype=np.float32)
    for r, rows in enumerate(others):
        if len(rows) == 0:
            continue
        c = codes[rows]
        num, den = _pos(c).sum(0), _lab(c).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            lab[r] = np.where(den > 0, num / np.maximum(den, 1), np.nan)
        if den.sum() > 0:
            rate[r] = num.sum() / den.sum()
    return lab, rate


class FusionLearner(Learner):
    """logit = gate·signal + (1 - gate)·context + b_g, per line c:
    signal = w₁[c]·(label_o - ½) + w₂[c]·logit(rate_o) + w₀ (terms present only where the other lines have them),
    context = v₁[c]·logit(knowledge ridge score, cross-fitted) + v₀[c], gate = σ(a₀ + a₁·has_label + a₂·has_rate)."""

    name = "ctxfusion"
    # has_label, label_o - 1/2, has_rate, logit(rate_o), context score, has_transfer, transfer score - 1/2
    FEATS = 7

    def _features(self, codes: np.ndarray, others: list[np.ndarray], ctx: np.ndarray,
                  transfer: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        lab, rate = _signal(codes, others)
        has_l = np.isfinite(lab)
        has_r = np.broadcast_to(np.isfinite(rate)[:, None], lab.shape)
        r = np.broadcast_to(_logit(np.nan_to_num(rate, nan=0.5))[:, None], lab.shape)
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
        from pertpipe.models.label_transfer import LineTransfer

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

    def _net(self, n_lines: int, G: int) -> Any:
        import torch
        from torch import nn

        self_gate = self.p.label_fusion == "gated"

        class Gate(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                # [kind, line]: w0, w1 (label), w2 (rate), w3 (transfer); the signal head starts as xctx_rate does
                # (label, then rate) plus the transfer score
                self.w = nn.Parameter(torch.tensor([0.0, 4.0, 1.0, 4.0]).repeat(2, n_lines, 1))
                self.v = nn.Parameter(torch.tensor([1.0, 0.0]).repeat(2, n_lines, 1))  # v1, v0
                self.a = nn.Parameter(torch.zeros(2, 4))
                self.b = nn.Parameter(torch.zeros(2, G))

            def forward(self, kind: int, X: Any, line: Any, gene: Any) -> Any:
                w, v, a = self.w[kind][line], self.v[kind][line], self.a[kind]
                sig = w[:, 0] * X[:, 0] + w[:, 1] * X[:, 1] + w[:, 2] * X[:, 3] * X[:, 2] + w[:, 3] * X[:, 6]
                ctx = v[:, 0] * X[:, 4] + v[:, 1]
                if self_gate:
                    g = torch.sigmoid(a[0] + a[1] * X[:, 0] + a[2] * X[:, 2] + a[3] * X[:, 5])
                    return g * sig + (1 - g) * ctx + self.b[kind][gene]
                return sig + ctx + self.b[kind][gene]

        return Gate()

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
        perts = np.unique(data.perts)
        fold_of = dict(zip(np.random.default_rng(self.seed + 31).permutation(perts), np.arange(len(perts)) % 5))
        f = np.array([fold_of[p] for p in data.perts])
        ctx = {k: np.zeros(data.de.shape, dtype=np.float32) for k in ("de", "dir")}
        for i in range(5):
            held = f == i
            rl = RidgeLearner(ridge_p, self.seed)
            rl.fit(data.rows(~held), kn)
            de, dr = rl.predict(data.perts[held], data.lines[held])
            ctx["de"][held], ctx["dir"][held] = _feature("ridge", de), _feature("ridge", dr)
        others = _other_lines(data.perts, data.lines, data.perts, data.lines)
        self.transfer, self.transfer_log = None, None
        trans = self._transfer(data, 5, f) if self.p.label_transfer and len(self.line_index) > 1 else {}
        line = torch.as_tensor([self.line_index[str(c)] for c in data.lines])
        self.net = self._net(len(self.line_index), len(self.genes))
        opt = torch.optim.LBFGS(self.net.parameters(), lr=0.5, max_iter=100, line_search_fn="strong_wolfe")
        batches = []
        for kind, codes in (("de", data.de), ("dir", data.dir)):
            X = self._features(codes, others, ctx[kind], trans.get(kind))
            r, g = np.nonzero(codes != MISSING)
            batches.append((torch.as_tensor(X[r, g]), line[r], torch.as_tensor(g),
                            torch.as_tensor(codes[r, g], dtype=torch.float32)))
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def closure() -> Any:
            opt.zero_grad()
            loss = sum(bce(self.net(k, X, ln, g), y) for k, (X, ln, g, y) in enumerate(batches))
            loss = loss + 1e-4 * (self.net.b ** 2).sum()
            loss.backward()
            return loss

        loss = float(opt.step(closure).detach())
        self.ridge = RidgeLearner(ridge_p, self.seed)
        self.ridge.fit(data, kn)
        covered = sum(len(o) > 0 for o in others)
        return {"loss": round(loss, 5), "train_rows_with_other_lines": int(covered),
                "gate": self.net.a.detach().numpy().round(3).tolist(), "transfer": self.transfer_log,
                "signal_weights": self.net.w.detach().numpy().round(3).tolist()}

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        others = _other_lines(self.store.perts, self.store.lines, perts, lines)
        de, dr = self.ridge.predict(perts, lines)
        line_i = np.array([self.line_index.get(str(c), 0) for c in lines])
        G = len(self.genes)
        out = []
        with torch.no_grad():
            for k, (codes, c) in enumerate(((self.store.de, de), (self.store.dir, dr))):
                kind = ("de", "dir")[k]
                tr = (self.transfer.predict(self.store, kind, np.asarray(perts), np.asarray(lines))
                      if self.transfer is not None else None)
                X = self._features(codes, others, _feature("ridge", c), tr)
                n = len(perts)
                flat = torch.as_tensor(X.reshape(n * G, self.FEATS))
                s = self.net(k, flat, torch.as_tensor(np.repeat(line_i, G)), torch.as_tensor(np.tile(np.arange(G), n)))
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
        from pertpipe.models.label_transfer import LineTransfer

        self.transfer = LineTransfer.from_state(state["transfer"], mean_auc, self.seed) if state.get("transfer") else None


LEARNERS[FusionLearner.name] = FusionLearner
