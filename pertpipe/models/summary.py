"""Views of the training split that models and the prediction writer share, read chunk by chunk.

* :class:`TrainingSummary`: per (target, cell type) and per control cell type the pseudobulk means, and group sizes
  (what the baselines and the shrinkage validation need);
* :class:`ControlCells`: the training control cells predictions start from, read row by row on demand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core.groups import group_sums
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader
from pertpipe.errors import ContractError


@dataclass
class TrainingSummary:
    """Pseudobulk view of the training split, computed chunk by chunk (enough for the baselines)."""

    genes: list[str]
    target_ct_means: pd.DataFrame  # index (target_gene, cell_type), columns genes; perturbed groups
    target_ct_counts: pd.Series
    control_ct_means: pd.DataFrame  # index cell_type
    control_ctb_counts: pd.Series  # index (cell_type, batch)
    cell_types: list[str] = field(default_factory=list)

    @classmethod
    def from_h5ad(cls, path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK) -> TrainingSummary:
        with H5adReader(path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str)
            genes = [str(g) for g in r.var_names]
            keys = obs["target_gene"] + "\x1f" + obs["cell_type"]
            g = group_sums(r, keys.to_numpy(), chunk_size=chunk_size)
        names, sums, n = g.names, g.sums, g.n
        idx = pd.MultiIndex.from_tuples([tuple(k.split("\x1f")) for k in names], names=["target_gene", "cell_type"])
        means = pd.DataFrame(sums / n[:, None], index=idx, columns=genes)
        counts = pd.Series(n, index=idx)
        is_ctrl = idx.get_level_values(0) == CONTROL_LABEL
        if not is_ctrl.any():
            raise ContractError(path, "obs['target_gene']", "no 'non-targeting' cells in the training split",
                                "stage 1 divides controls between train and val; check split.control_val_fraction")
        ctrl = means[is_ctrl].droplevel(0)
        ctb = obs[obs["target_gene"] == CONTROL_LABEL].groupby(["cell_type", "batch"]).size()
        return cls(genes, means[~is_ctrl], counts[~is_ctrl], ctrl, ctb, sorted(ctrl.index))

    def without(self, groups: set[tuple[str, str]]) -> TrainingSummary:
        """The same summary with the perturbed (target, cell type) ``groups`` left out (controls kept): what a
        baseline fitted without those groups sees (the cross-fitting of :mod:`pertpipe.models.baseline_prior`)."""
        keep = ~self.target_ct_means.index.isin(sorted(groups))
        return TrainingSummary(self.genes, self.target_ct_means[keep], self.target_ct_counts[keep],
                               self.control_ct_means, self.control_ctb_counts, list(self.cell_types))

    def target_deltas(self) -> pd.DataFrame:
        """Per training target: mean over cell types (cell-weighted) of (target mean - control mean)."""
        rows, names = [], []
        for target, grp in self.target_ct_means.groupby(level=0, sort=True):
            cts = grp.index.get_level_values(1)
            w = self.target_ct_counts.loc[grp.index].to_numpy(dtype=float)
            d = grp.to_numpy() - self.control_ct_means.loc[cts].to_numpy()
            rows.append((d * w[:, None]).sum(0) / w.sum())
            names.append(target)
        return pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, len(self.genes))), index=names,
                            columns=self.genes)

    def group_deltas(self) -> pd.DataFrame:
        """Per training (target, cell type): its mean minus the controls of that cell type."""
        cts = self.target_ct_means.index.get_level_values(1)
        return self.target_ct_means - self.control_ct_means.loc[cts].to_numpy()

    def mean_shift(self, kind: str = "global", exclude: set[str] | None = None
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The mean training shift, leaving out targets in ``exclude``; returns (per cell type, for cell types the
        training split lacks).

        * ``global``: cell_mean's shift (each target's cell-weighted shift over cell types, averaged over targets),
          the same in every cell type;
        * ``cell_type``: per cell type, the mean shift of that cell type's training targets (celltype_mean:
          TxPert's "general baseline"); unknown cell types get the mean over every group.
        """
        exclude = set(exclude or ())
        cell_types = sorted(set(self.target_ct_means.index.get_level_values(1)))
        if kind == "global":
            targets = self.target_deltas()
            keep = ~targets.index.isin(sorted(exclude))
            shift = (targets[keep] if keep.any() else targets).to_numpy().mean(0)
            return {ct: shift for ct in cell_types}, shift
        if kind != "cell_type":
            raise ValueError(f"mean_shift kind is {kind!r}; use global or cell_type")
        d = self.group_deltas()
        keep = ~d.index.get_level_values(0).isin(sorted(exclude))
        d = d[keep] if keep.any() else d
        cts = d.index.get_level_values(1)
        arr = d.to_numpy()
        return {ct: arr[np.asarray(cts == ct)].mean(0) for ct in sorted(set(cts))}, arr.mean(0)


@dataclass
class ControlCells:
    """The training control cells predictions start from: obs (cell_type, batch), log1p X, and optionally raw
    counts (``layers["counts"]``) and ``obsm["spatial"]`` (None where the file has none or nobody asked).

    ``x`` and ``counts`` are row sources indexed by control number: read from the file on demand
    (:class:`~pertpipe.core.h5io.RowReader`, so memory follows the rows drawn, not the control pool) or, in
    tests, in-memory CSR matrices; ``x[pick]`` is a CSR either way.
    """

    obs: pd.DataFrame
    x: Any
    counts: Any = None
    spatial: np.ndarray | None = None

    @classmethod
    def load(cls, train: str | os.PathLike, *, counts: bool = False, spatial: bool = False,
             chunk_size: int = DEFAULT_CHUNK) -> ControlCells:
        from pertpipe.core.h5io import RowReader

        with H5adReader(train) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str)
            mask = (obs["target_gene"] == CONTROL_LABEL).to_numpy()
            has_counts = counts and "counts" in r.layers()
            xy = r.obsm("spatial")[mask] if spatial and "spatial" in r.obsm_keys() else None
        rows = np.flatnonzero(mask)
        x = RowReader(train, rows=rows)
        c = RowReader(train, "counts", rows=rows) if has_counts else None
        return cls(obs[mask].reset_index(drop=True), x, c, xy)
