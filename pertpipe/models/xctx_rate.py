"""``xctx_rate``: the cross-context baseline of the labels task (leave one line out).

A perturbation's score for readout gene g in line c is its labels for g in the *other* lines of the training data,
smoothed toward its DE rate there: (Σ labels + rate) / (n labelled + 1); where the perturbation is measured in no other
line, the line's mean rate. Reads no knowledge. See :class:`CrossContextLearner` (below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pertpipe.data.labels import LabelData
from pertpipe.models.base import LabelsOnly, register_model
from pertpipe.models.label_learner import Knowledge, Learner, labelled, positives


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
                    num, den = positives(same).sum(0), labelled(same).sum(0)
                    out[k][r] = num.sum() / max(den.sum(), 1)
                    continue
                c = codes[rows]
                num, den = positives(c).sum(0), labelled(c).sum(0)
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


@register_model("xctx_rate")
class CrossContextRateModel(LabelsOnly):
    """The perturbation's labels in the other lines, else its DE rate there."""

    baseline = True
    inputs = ()
    label_learner = CrossContextLearner

    @dataclass
    class Params:
        pass
