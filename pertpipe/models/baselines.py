"""Baselines: ``control`` (no change) and ``cell_mean`` (the VCC cell-mean baseline)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("control")
class ControlModel(PredictsShift):
    """No change: every target is predicted as training control cells of its cell type and batch."""

    baseline = True

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self._summarise(inputs)
        return {"fit_s": round(time.perf_counter() - t0, 3), "train_targets": int(s.target_deltas().shape[0])}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        return np.zeros(len(self.genes))

    def state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        pass


@register_model("cell_mean")
class CellMeanModel(PredictsShift):
    """The VCC cell-mean baseline as a shift: the mean over training perturbations of their mean effect.

    cell-eval's baseline (``cell-eval baseline``) predicts the mean of the per-perturbation mean profiles
    for every target; expressed relative to controls this is the mean of the per-perturbation deltas,
    the same for every target and cell type.
    """

    baseline = True

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        deltas = self._summarise(inputs).target_deltas()
        self.shift = deltas.to_numpy().mean(axis=0)
        return {"fit_s": round(time.perf_counter() - t0, 3), "train_targets": int(deltas.shape[0])}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        return self.shift

    def state(self) -> dict[str, Any]:
        return {"shift": self.shift}

    def set_state(self, state: dict[str, Any]) -> None:
        self.shift = np.asarray(state["shift"])
