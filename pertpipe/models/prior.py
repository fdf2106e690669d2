"""A knowledge prior: an unseen perturbation acts like the training perturbations whose genes are most alike.

The similarity is that of the targets' facet embeddings (the knowledge stage's tensor: mean over a gene's
facets with text, summed over the genes of a double, cosine), the idea GEARS builds its GO graph on. The prior
shift of ``target`` in cell type ``ct`` is a softmax(similarity / τ)-weighted mean over its ``k`` nearest
training targets of their observed mean shift in ``ct`` (or, where a neighbour was not measured in ``ct``, its
cell-weighted shift over the cell types where it was). A target without any facet text gets the plain mean shift.

Training groups are (target, cell type); :meth:`FacetKNNPrior.shift` can leave one group out, so that a model
learning a residual over the prior sees, for each training group, the prior it would get were that group
unseen: for unseen-target splits that leaves the target out entirely, for cell-line holdout only its own cell
type (its other cell types stay, as they do for the held-out group at prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def target_vector(lookup: Any, label: str) -> np.ndarray:
    """Unit vector of a perturbation label from the facet tensor (zeros when no facet has text)."""
    f, m, _t = lookup.target(label)
    v = (f * m[..., None]).sum(axis=(0, 1)) / max(1.0, float(m.sum()))
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float64) if n > 0 else v.astype(np.float64)


@dataclass
class FacetKNNPrior:
    targets: list[str]  # training targets (rows of vectors)
    vectors: np.ndarray  # [T, D] unit vectors
    group_shift: dict[tuple[str, str], np.ndarray]  # (target, cell type) -> mean shift [G]
    group_cells: dict[tuple[str, str], int]
    mean_shift: np.ndarray  # [G]
    k: int = 5
    tau: float = 0.05
    lookup: Any = field(default=None, repr=False)  # the FacetLookup the vectors come from
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def vector(self, label: str) -> np.ndarray:
        if label not in self._cache:
            self._cache[label] = target_vector(self.lookup, label)
        return self._cache[label]

    @classmethod
    def fit(cls, summary: Any, lookup: Any, *, exclude: set[str] = frozenset(), k: int = 5,
            tau: float = 0.05) -> FacetKNNPrior:
        """From a :class:`~pertpipe.models.base.TrainingSummary`, leaving the targets in ``exclude`` out."""
        shift, cells = {}, {}
        for (t, ct), row in summary.target_ct_means.iterrows():
            if t in exclude:
                continue
            shift[(t, ct)] = row.to_numpy() - summary.control_ct_means.loc[ct].to_numpy()
            cells[(t, ct)] = int(summary.target_ct_counts.loc[(t, ct)])
        targets = sorted({t for t, _ in shift})
        vectors = np.stack([target_vector(lookup, t) for t in targets]) if targets else np.zeros((0, lookup.dim))
        mean = np.mean(list(shift.values()), axis=0) if shift else np.zeros(len(summary.genes))
        return cls(targets, vectors, shift, cells, mean, k, tau, lookup)

    def _shift_of(self, target: str, ct: str, leave_out: tuple[str, str] | None) -> np.ndarray | None:
        if (target, ct) in self.group_shift and (target, ct) != leave_out:
            return self.group_shift[(target, ct)]
        rows = [(s, self.group_cells[key]) for key, s in self.group_shift.items()
                if key[0] == target and key != leave_out]
        if not rows:
            return None
        w = np.array([n for _, n in rows], dtype=np.float64)
        return (np.stack([s for s, _ in rows]) * w[:, None]).sum(0) / w.sum()

    def shift(self, label: str, cell_type: str, *, leave_out: tuple[str, str] | None = None) -> np.ndarray:
        """Prior shift [G] of ``label`` in ``cell_type`` (``leave_out``: a training group to ignore)."""
        v = self.vector(label)
        if not v.any() or not self.targets:
            return self.mean_shift
        sims = self.vectors @ v
        cand, shifts = [], []
        for i in np.argsort(-sims):
            s = self._shift_of(self.targets[i], cell_type, leave_out)
            if s is not None:
                cand.append(sims[i])
                shifts.append(s)
            if len(cand) == self.k:
                break
        if not cand:
            return self.mean_shift
        sim = np.asarray(cand)
        w = np.exp((sim - sim.max()) / self.tau)
        return (w / w.sum()) @ np.stack(shifts)

    def state(self) -> dict[str, Any]:
        return {"targets": self.targets, "vectors": self.vectors, "mean_shift": self.mean_shift, "k": self.k,
                "tau": self.tau, "groups": [list(g) for g in self.group_shift],
                "group_shift": np.stack(list(self.group_shift.values())) if self.group_shift else None,
                "group_cells": list(self.group_cells.values())}

    @classmethod
    def from_state(cls, s: dict[str, Any], lookup: Any) -> FacetKNNPrior:
        groups = [tuple(g) for g in s["groups"]]
        shifts = {g: np.asarray(s["group_shift"][i]) for i, g in enumerate(groups)}
        return cls(list(s["targets"]), np.asarray(s["vectors"]), shifts, dict(zip(groups, s["group_cells"])),
                   np.asarray(s["mean_shift"]), int(s["k"]), float(s["tau"]), lookup)
