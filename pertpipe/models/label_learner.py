"""The labels task's side of the model contract: what a learner is and what every learner shares.

A model that serves the labels task derives from :class:`~pertpipe.models.base.PredictsLabels` and names its
:class:`Learner` class beside it (``label_learner``): the learner fits on the training rows (codes 1 / 0 / -1 per
readout gene, DE and direction, :class:`pertpipe.data.labels.LabelData`) with the knowledge tensor (:class:`Knowledge`)
and scores every readout gene of (perturbation, line) rows. Settings a learner chooses (k, the ridge α, the epoch) are
chosen on a validation share of the *training perturbations* (:func:`validation_split`), never on the test rows. The
learners live with their models: ``knowledge_knn``, ``knowledge_ridge``, ``xctx_rate``, ``dygenept``
(:mod:`pertpipe.models.dygenept_labels`) and ``ctxfusion`` (:mod:`pertpipe.models.ctxfusion_labels`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    """Mean over genes with both classes of the ROC AUC (Mann-Whitney, ties counted half), over the labelled pairs
    of ``codes`` [rows, G] (:func:`mean_auc_flat` does the ranking)."""
    r, g = np.nonzero(codes != MISSING)
    return mean_auc_flat(g, (codes[r, g] == 1).astype(np.float64), np.asarray(scores)[r, g])


def mean_auc_flat(gene: np.ndarray, y: np.ndarray, scores: np.ndarray) -> float:
    """:func:`mean_auc` over labelled pairs given flat: ``gene`` [m] each pair's gene, ``y`` [m] its 0/1 label,
    ``scores`` [m]. Ranks within each gene (ties counted half) by one sort instead of a loop over genes."""
    if len(gene) == 0:
        return float("nan")
    order = np.lexsort((scores, gene))
    g, s, yy = gene[order], scores[order], y[order]
    pos = np.arange(len(g))
    first = np.r_[True, g[1:] != g[:-1]]
    tie = np.cumsum(np.r_[True, first[1:] | (s[1:] != s[:-1])]) - 1
    within = pos - np.maximum.accumulate(np.where(first, pos, 0)) + 1.0
    rank = (np.bincount(tie, within) / np.bincount(tie))[tie]
    G = int(g.max()) + 1
    npos = np.bincount(g, yy, minlength=G)
    n = np.bincount(g, minlength=G)
    rsum = np.bincount(g, rank * yy, minlength=G)
    ok = (npos > 0) & (npos < n)
    if not ok.any():
        return float("nan")
    auc = (rsum[ok] - npos[ok] * (npos[ok] + 1) / 2) / (npos[ok] * (n[ok] - npos[ok]))
    return float(auc.mean())


def validation_split(data: LabelData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a validation share of the training perturbations (a perturbation is wholly in one side)."""
    perts = np.unique(data.perts)
    rng = np.random.default_rng(seed + 7919)
    n_val = max(1, int(round(fraction * len(perts)))) if len(perts) > 4 else 0
    val = set(rng.choice(perts, size=n_val, replace=False)) if n_val else set()
    is_val = np.isin(data.perts, list(val))
    return ~is_val, is_val


def positives(codes: np.ndarray) -> np.ndarray:
    return (codes == 1).astype(np.float32)


def labelled(codes: np.ndarray) -> np.ndarray:
    return (codes != MISSING).astype(np.float32)


def row_rate(codes: np.ndarray) -> np.ndarray:
    lab = labelled(codes).sum(1)
    return np.where(lab > 0, positives(codes).sum(1) / np.maximum(lab, 1), np.nan)


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



def label_targets(codes: np.ndarray, fill: float) -> np.ndarray:
    """Label codes as regression targets: unlabelled pairs filled with ``fill`` (DE 0, direction ½)."""
    return np.where(codes == MISSING, fill, codes).astype(np.float64)


FILLS = {"de": 0.0, "dir": 0.5}  # an unlabelled pair as a regression target: not DE; direction undecided


def perturbation_folds(data: LabelData, folds: int, seed: int) -> np.ndarray:
    """[rows] the cross-fitting fold of each row: folds of perturbations (a perturbation's rows, every line's, share
    one fold)."""
    perts = np.unique(data.perts)
    fold_of = dict(zip(np.random.default_rng(seed + 31).permutation(perts), np.arange(len(perts)) % folds))
    return np.array([fold_of[p] for p in data.perts])


def recentre_folds(scores: np.ndarray, data: LabelData, kind: str, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold scores [rows, G] (or [rows, P, G]) on every row's own line's per-gene label mean.

    A baseline fitted without fold i scores fold i's rows around the per-gene label mean of the *other* folds. With
    labels as sparse as PerturbQA's (a gene DE in a handful of perturbations), a fold that holds one of gene j's
    positives has a lower mean elsewhere, so its rows score lower for j exactly where j is DE: out-of-fold scores are
    anti-correlated with the labels within a gene (HepG2's knowledge ridge: per-gene AUC 0.34 out of fold, 0.61
    once recentred). A network trained on such features learns to distrust them, while at prediction
    the baselines are fitted on every row and carry no such bias. Each fold's scores are shifted by (the line's
    per-gene mean label over all rows) - (that over the fold's training rows): a ridge's intercept exactly."""
    codes = data.de if kind == "de" else data.dir
    out = np.array(scores, dtype=np.float32, copy=True)
    for line in np.unique(data.lines):
        lc = data.lines == line
        Y = label_targets(codes[lc], FILLS[kind]).astype(np.float32)
        f = fold[lc]
        m_all = Y.mean(0)
        rows = np.flatnonzero(lc)
        for i in np.unique(f):
            tr = f != i
            if not tr.any():
                continue
            shift = m_all - Y[tr].mean(0)
            out[rows[~tr]] += shift  # broadcasts over a priors axis too
    return out


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


# the baselines' settings where a learner uses them as priors or features (k and α chosen on validation)
PRIOR_PARAMS = dict(k=None, k_grid=(5, 10, 20, 50, 100), smoothing=1.0, val_fraction=0.15, ridge=None)


def logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 1e-3, 1 - 1e-3)
    return np.log(x / (1 - x)).astype(np.float32)


def prior_feature(name: str, x: np.ndarray) -> np.ndarray:
    """A baseline's score on a scale the networks read: knn's smoothed rates as logits; the ridge's fitted labels
    (not probabilities: mostly near 0 and sometimes below) scaled linearly, so their order is kept."""
    if name == "knowledge_knn":
        return logit(x)
    return (np.clip(x, -1.0, 2.0) * 5.0).astype(np.float32)
