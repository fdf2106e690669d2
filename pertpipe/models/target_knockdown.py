"""``target_knockdown``: the CRISPR-informed mean (the cell-type mean plus the target gene's own change).

Most of a CRISPRi/a perturbation's measurable effect is on its own gene. This baseline predicts the cell-type mean
shift (:mod:`pertpipe.models.celltype_mean`) everywhere except at the perturbed gene(s), where it predicts the
typical own-gene change learned from training perturbations whose target is measured: for every training (target,
cell type) group with the target gene expressed in that cell type's controls (control mean ≥ ``min_control``,
log1p), the relative change r = (perturbed mean - control mean) / control mean of the target gene; the median r over
groups is applied to the held-out target's control mean (shift = r · control mean). CRISPRi gives r < 0 (a
knockdown), CRISPRa r > 0; a dataset with no measured training target gives r = 0 and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe import perturbation_genes
from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("target_knockdown")
class TargetKnockdownModel(PredictsShift):
    """Context mean + the median relative own-gene change of measured training targets."""

    baseline = True

    @dataclass
    class Params:
        min_control: float = field(default=0.05, metadata={"ge": 0})  # log1p control mean for a usable own gene

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self._summarise(inputs)
        self.per_ct, self.default = s.mean_shift("cell_type")
        self.gene_index = {g: i for i, g in enumerate(self.genes)}
        self.control = {ct: s.control_ct_means.loc[ct].to_numpy() for ct in s.control_ct_means.index}
        ratios = []
        for (target, ct), row in zip(s.target_ct_means.index, s.target_ct_means.to_numpy()):
            genes = perturbation_genes(target)
            if len(genes) != 1 or genes[0] not in self.gene_index or ct not in self.control:
                continue
            j = self.gene_index[genes[0]]
            base = self.control[ct][j]
            if base >= self.params.min_control:
                ratios.append((row[j] - base) / base)
        self.ratio = float(np.median(ratios)) if ratios else 0.0
        self.n_measured = len(ratios)
        return {"fit_s": round(time.perf_counter() - t0, 3), "own_gene_ratio": round(self.ratio, 4),
                "measured_training_groups": self.n_measured,
                "note": None if ratios else "no training target measured: the cell-type mean alone"}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        shift = np.array(self.per_ct.get(cell_type, self.default), dtype=np.float64)
        ctrl = self.control.get(cell_type)
        for g in perturbation_genes(target):
            j = self.gene_index.get(g)
            if j is not None and ctrl is not None:
                shift[j] = self.ratio * ctrl[j]
        return shift

    def state(self) -> dict[str, Any]:
        return {"per_ct": self.per_ct, "default": self.default, "control": self.control, "ratio": self.ratio,
                "n_measured": self.n_measured}

    def set_state(self, state: dict[str, Any]) -> None:
        self.per_ct = {k: np.asarray(v) for k, v in state["per_ct"].items()}
        self.default = np.asarray(state["default"])
        self.control = {k: np.asarray(v) for k, v in state["control"].items()}
        self.ratio = float(state["ratio"])
        self.n_measured = int(state["n_measured"])
        self.gene_index = {g: i for i, g in enumerate(self.genes)}
