"""``celltype_mean``: TxPert's "general baseline" on single cells, the context being the cell type.

A perturbation in cell type c is predicted as c's training control cells plus the mean shift of c's training
perturbations (each (target, c) group's mean minus c's control mean, averaged over targets). A cell type without
training perturbations gets the mean over every training group. With one cell type it is ``cell_mean`` up to the
weighting (``cell_mean`` weights each target's cell types by cells). It is also what a shrunk model with the
per-cell-type anchor predicts at λ = 0 (:mod:`pertpipe.models.shrinkage`), prediction for prediction.

It is not ``context_mean`` (:mod:`pertpipe.models.ctxfusion`, the cross-context transfer baseline), which predicts
the perturbation's own mean shift over the other contexts it was seen in.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("celltype_mean")
class CellTypeMeanModel(PredictsShift):
    """The cell type's controls + the mean training shift of that cell type."""

    baseline = True

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        return {**self.fit_summary(self._summarise(inputs)), "fit_s": round(time.perf_counter() - t0, 3)}

    def fit_summary(self, summary: Any, lookup: Any = None) -> dict[str, Any]:
        """Fit from a training summary (also the cross-fitted prior candidate of DyGenePT and CFM-VC)."""
        self.genes = summary.genes
        self.per_ct, self.default = summary.mean_shift("cell_type")
        return {"train_groups": int(len(summary.target_ct_means)), "contexts": sorted(self.per_ct)}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        if cell_type not in self.per_ct:
            self.notes[f"{target}|{cell_type}"] = "cell type without training perturbations: mean over all groups"
        return self.per_ct.get(cell_type, self.default)

    def state(self) -> dict[str, Any]:
        return {"per_ct": self.per_ct, "default": self.default}

    def set_state(self, state: dict[str, Any]) -> None:
        self.per_ct = {k: np.asarray(v) for k, v in state["per_ct"].items()}
        self.default = np.asarray(state["default"])
