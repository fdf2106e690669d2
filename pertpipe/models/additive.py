"""``additive``: the seen-perturbation baseline, additive for combinations.

Each perturbed gene's shift is what training observed for it as a single perturbation: in the same cell type where it
was seen there, else its cell-weighted mean over the cell types it was seen in (a cell-line holdout trains the same
perturbation in other lines). A combination ``A+B`` is predicted as the sum of its singles' shifts (the additive
model of Norman 2019 and of the combination benchmarks); a gene never seen alone contributes the cell-type mean shift
(:mod:`pertpipe.models.celltype_mean`) once, so a wholly unseen perturbation is predicted as the cell-type mean. The
notes of the predict step say, per held-out perturbation, how many of its genes were seen.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pertpipe import COMBO_SEP, perturbation_genes
from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("additive")
class AdditiveModel(PredictsShift):
    """Seen singles' shifts, summed over a combination's genes; the cell-type mean for genes never seen alone."""

    baseline = True

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        return {**self.fit_summary(self._summarise(inputs)), "fit_s": round(time.perf_counter() - t0, 3)}

    def fit_summary(self, s: Any, lookup: Any = None) -> dict[str, Any]:
        """Fit from a training summary (also the cross-fitted prior candidate of DyGenePT and CFM-VC)."""
        self.genes = s.genes
        self.per_ct, self.default = s.mean_shift("cell_type")
        singles = [t for t in s.target_ct_means.index.get_level_values(0) if COMBO_SEP not in t]
        groups = s.group_deltas()
        self.single_ct = {f"{t}|{ct}": row for (t, ct), row in zip(groups.index, groups.to_numpy())
                          if COMBO_SEP not in t}
        overall = s.target_deltas()
        self.single = {t: overall.loc[t].to_numpy() for t in sorted(set(singles))}
        return {"seen_singles": len(self.single)}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        genes = perturbation_genes(target)
        context = np.asarray(self.per_ct.get(cell_type, self.default), dtype=np.float64)
        parts, unseen = [], 0
        for g in genes:
            own = self.single_ct.get(f"{g}|{cell_type}")
            own = self.single.get(g) if own is None else own
            if own is None:
                unseen += 1
            else:
                parts.append(np.asarray(own, dtype=np.float64))
        if unseen:
            parts.append(context)
        self.notes[f"{target}|{cell_type}"] = f"{len(genes) - unseen} of {len(genes)} gene(s) seen alone in training"
        return np.sum(parts, axis=0) if parts else context

    def state(self) -> dict[str, Any]:
        return {"per_ct": self.per_ct, "default": self.default, "single_ct": self.single_ct, "single": self.single}

    def set_state(self, state: dict[str, Any]) -> None:
        self.per_ct = {k: np.asarray(v) for k, v in state["per_ct"].items()}
        self.default = np.asarray(state["default"])
        self.single_ct = {k: np.asarray(v) for k, v in state["single_ct"].items()}
        self.single = {k: np.asarray(v) for k, v in state["single"].items()}
