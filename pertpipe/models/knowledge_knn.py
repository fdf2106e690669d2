"""``knowledge_knn``: the retrieval baseline of the labels task.

A perturbation's score for readout gene g is the mean label of g over its k facet-nearest training perturbations of
the same line (cosine of the pooled facet embeddings, the knowledge stage's tensor), smoothed toward their overall
DE rate where few of them are labelled for g: (Σ labels + m·rate) / (n labelled + m). k is chosen from ``k_grid`` on
a validation share of the training perturbations unless ``k`` fixes it. Direction scores the same way over the
direction labels. See :class:`KnnLearner` (below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe.data.labels import LabelData
from pertpipe.models.base import LabelsOnly, register_model
from pertpipe.models.label_learner import Knowledge, Learner, labelled, positives, validation_split


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
                    num, den = positives(c).sum(0), labelled(c).sum(0)
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


@register_model("knowledge_knn")
class KnowledgeKnnModel(LabelsOnly):
    """Mean label of the k facet-nearest training perturbations (retrieval)."""

    baseline = True
    inputs = ("knowledge",)
    label_learner = KnnLearner

    @dataclass
    class Params:
        k: int | None = field(default=None, metadata={"ge": 1})  # null: chosen from k_grid on validation
        k_grid: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100])
        smoothing: float = field(default=1.0, metadata={"ge": 0})
        val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})
