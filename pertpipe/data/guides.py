"""Cells to perturbations from gRNA counts (guide-level input).

A CROP-seq / ECCITE-seq file may carry a cell × guide UMI matrix instead of a perturbation label. Each cell
goes to the target of its top guide when that guide has at least ``min_umi`` UMIs and at least
``min_fraction`` of the cell's guide UMIs; the rest are ``unassigned`` (dropped by stage 1 and counted in its
report). Non-targeting guides map to the control label through the adapter's ``control_values``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

UNASSIGNED = "unassigned"


@dataclass
class GuideAssignment:
    labels: np.ndarray  # per cell: a guide target, or UNASSIGNED
    top_guide: np.ndarray  # per cell: the top guide's name ("" with no guide UMI)
    top_umi: np.ndarray
    total_umi: np.ndarray

    def summary(self, *, min_umi: float, min_fraction: float) -> dict[str, object]:
        un = self.labels == UNASSIGNED
        return {"cells": int(len(self.labels)), "assigned": int((~un).sum()), "unassigned": int(un.sum()),
                "no_guide_umi": int((self.total_umi == 0).sum()), "min_umi": min_umi, "min_fraction": min_fraction}


def assign_guides(counts: sp.spmatrix | np.ndarray, guide_names: list[str] | np.ndarray,
                  guide_targets: list[str] | np.ndarray, *, min_umi: float = 5, min_fraction: float = 0.8
                  ) -> GuideAssignment:
    """Top-guide assignment of each row of ``counts`` (cells × guides) with the thresholds above."""
    m = sp.csr_matrix(counts, dtype=np.float64)
    names, targets = np.asarray(guide_names, dtype=object), np.asarray(guide_targets, dtype=object)
    if m.shape[1] != len(names) or len(names) != len(targets):
        raise ValueError(f"{m.shape[1]} guide columns, {len(names)} guide names, {len(targets)} targets")
    total = np.asarray(m.sum(axis=1)).ravel()
    top = np.asarray(m.argmax(axis=1)).ravel()
    top_umi = np.asarray(m.max(axis=1).toarray()).ravel()
    frac = np.divide(top_umi, total, out=np.zeros_like(total), where=total > 0)
    ok = (total > 0) & (top_umi >= min_umi) & (frac >= min_fraction)
    labels = np.where(ok, targets[top], UNASSIGNED).astype(object)
    top_guide = np.where(total > 0, names[top], "").astype(object)
    return GuideAssignment(labels, top_guide, top_umi, total)
