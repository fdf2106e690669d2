"""Per-context statistics of a training split: control baselines, mean shifts and z-scores.

For each context (``cell_type``: a cell line, a condition) and each perturbation measured in it:

* ``baseline[c]``  the mean of the context's control cells (log1p; for signature data the vehicles' mean z, or 0),
* ``shift[p, c]``  mean perturbed - mean control (log1p space; for signature data the mean signature),
* ``z[p, c]``      (mean perturbed - mean control) / control sd per gene (``robust``: (median perturbed - median
  control) / (1.4826 MAD of the controls), the controls subsampled to ``max_robust_cells`` per context).
  The sd is floored (``sd_floor``) so a gene never seen in a context's controls does not divide by ~0.
  Signature data (L1000 level 4/5) are z-scores already: ``z = shift`` there.

One chunked pass over the training h5ad (sums and sums of squares per group); the robust option reads the
controls and each group's cells of one context at a time. Written by stage 1 as ``zscores.h5ad`` (obs = the
groups with their context and cell counts, X = z, ``layers['shift']``, ``uns`` baselines and control sd) so the
report lists it and models (``ctxfusion``, ``context_mean``) read the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core.groups import group_sums
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, value_kind
from pertpipe.errors import ContractError

SD_FLOOR = 0.05
_MAD_SCALE = 1.4826


@dataclass
class ContextStats:
    genes: list[str]
    contexts: list[str]
    baseline: np.ndarray  # [contexts x genes]
    control_sd: np.ndarray  # [contexts x genes]
    control_n: np.ndarray  # [contexts]
    groups: pd.DataFrame  # columns target_gene, cell_type, n_cells (one row per perturbed group)
    shift: np.ndarray  # [groups x genes]
    z: np.ndarray  # [groups x genes]
    value_kind: str = "log1p"  # or "zscore" (signature data)
    robust: bool = False

    def context_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.contexts)}

    def write(self, path: str | os.PathLike) -> None:
        import anndata as ad

        from pertpipe.io import atomic_path

        obs = self.groups.copy()
        obs.index = [f"{t}|{c}" for t, c in zip(obs.target_gene, obs.cell_type)]
        a = ad.AnnData(X=self.z.astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(self.genes)))
        a.layers["shift"] = self.shift.astype(np.float32)
        a.uns["contexts"] = np.asarray(self.contexts, dtype=object)
        a.uns["baseline"] = self.baseline.astype(np.float32)
        a.uns["control_sd"] = self.control_sd.astype(np.float32)
        a.uns["control_n"] = self.control_n.astype(np.int64)
        a.uns["value_kind"] = self.value_kind
        a.uns["robust"] = bool(self.robust)
        with atomic_path(path) as tmp:
            a.write_h5ad(tmp)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ContextStats:
        import anndata as ad

        a = ad.read_h5ad(path)
        groups = a.obs[["target_gene", "cell_type", "n_cells"]].reset_index(drop=True)
        groups["target_gene"] = groups["target_gene"].astype(str)
        groups["cell_type"] = groups["cell_type"].astype(str)
        return cls([str(g) for g in a.var_names], [str(c) for c in a.uns["contexts"]], np.asarray(a.uns["baseline"]),
                   np.asarray(a.uns["control_sd"]), np.asarray(a.uns["control_n"]), groups,
                   np.asarray(a.layers["shift"]), np.asarray(a.X), str(a.uns["value_kind"]), bool(a.uns["robust"]))

    def summary(self) -> dict[str, Any]:
        per_ctx = self.groups.groupby("cell_type").size().to_dict()
        return {"value_kind": self.value_kind, "robust": self.robust, "contexts": len(self.contexts),
                "groups": int(len(self.groups)), "perturbations": int(self.groups.target_gene.nunique()),
                "groups_per_context": {str(k): int(v) for k, v in per_ctx.items()},
                "controls_per_context": dict(zip(self.contexts, map(int, self.control_n))),
                "median_abs_z": float(np.median(np.abs(self.z))) if self.z.size else 0.0}


def context_stats(path: str | os.PathLike, *, robust: bool = False, sd_floor: float = SD_FLOOR,
                  max_robust_cells: int = 2000, chunk_size: int = DEFAULT_CHUNK, seed: int = 0) -> ContextStats:
    """The statistics of the training h5ad at ``path`` (see the module docstring)."""
    kind = value_kind(path)
    with H5adReader(path) as r:
        obs = r.obs[["target_gene", "cell_type"]].astype(str)
        genes = [str(g) for g in r.var_names]
        keys = obs["target_gene"] + "\x1f" + obs["cell_type"]
        g = group_sums(r, keys.to_numpy(), chunk_size=chunk_size, squares=True)
    names, s1, s2, n = g.names, g.sums, g.squares, g.n.astype(float)
    mean = s1 / n[:, None]
    var = np.maximum(s2 / n[:, None] - mean ** 2, 0) * (n / np.maximum(n - 1, 1))[:, None]
    split = [k.split("\x1f") for k in names]
    targets = np.array([t for t, _ in split], dtype=object)
    cts = np.array([c for _, c in split], dtype=object)
    contexts = sorted(set(cts))
    ci = {c: i for i, c in enumerate(contexts)}
    baseline = np.zeros((len(contexts), len(genes)))
    ctrl_sd = np.ones((len(contexts), len(genes)))
    ctrl_n = np.zeros(len(contexts), dtype=np.int64)
    is_ctrl = targets == CONTROL_LABEL
    for g in np.flatnonzero(is_ctrl):
        k = ci[cts[g]]
        baseline[k], ctrl_sd[k], ctrl_n[k] = mean[g], np.sqrt(var[g]), int(n[g])
    pert = np.flatnonzero(~is_ctrl)
    if len(pert) == 0:
        raise ContractError(path, "obs['target_gene']", "no perturbed cells in the training split",
                            "check the split (held-out fraction) and the control label")
    if kind == "log1p":
        missing = sorted({cts[g] for g in pert} - {c for c, k in ci.items() if ctrl_n[k] > 0})
        if missing:
            raise ContractError(path, "obs['target_gene']", f"contexts {missing} have perturbed cells but no "
                                "control cells in the training split", "keep controls of every context in training")
    groups = pd.DataFrame({"target_gene": targets[pert].astype(str), "cell_type": cts[pert].astype(str),
                           "n_cells": n[pert].astype(np.int64)})
    base_of = baseline[[ci[c] for c in cts[pert]]]
    shift = mean[pert] - base_of
    if kind == "zscore":
        z = mean[pert].copy()  # signatures are z-scores already; vehicles (if any) are ~0
        shift = z.copy()
        ctrl_sd = np.ones_like(ctrl_sd)
    elif robust:
        z = _robust_z(path, groups, contexts, genes, max_cells=max_robust_cells, sd_floor=sd_floor,
                      chunk_size=chunk_size, seed=seed)
    else:
        z = shift / np.maximum(ctrl_sd[[ci[c] for c in cts[pert]]], sd_floor)
    return ContextStats(genes, contexts, baseline, ctrl_sd, ctrl_n, groups, shift, z, kind, robust and kind == "log1p")


def _robust_z(path, groups: pd.DataFrame, contexts: list[str], genes: list[str], *, max_cells: int,
              sd_floor: float, chunk_size: int, seed: int) -> np.ndarray:
    """(median perturbed - median control) / (1.4826 MAD control), one context at a time (subsampled)."""
    rng = np.random.default_rng(seed)
    z = np.zeros((len(groups), len(genes)))
    with H5adReader(path) as r:
        obs = r.obs[["target_gene", "cell_type"]].astype(str)

        def cells(mask: np.ndarray) -> np.ndarray:
            idx = np.flatnonzero(mask)
            if len(idx) > max_cells:
                idx = np.sort(rng.choice(idx, size=max_cells, replace=False))
            m = np.zeros(len(mask), dtype=bool)
            m[idx] = True
            return r.read_masked(m, chunk_size=chunk_size).toarray().astype(np.float64)

        for ctx in contexts:
            in_ctx = (obs["cell_type"] == ctx).to_numpy()
            ctrl = cells(in_ctx & (obs["target_gene"] == CONTROL_LABEL).to_numpy())
            med = np.median(ctrl, axis=0)
            mad = np.maximum(_MAD_SCALE * np.median(np.abs(ctrl - med), axis=0), sd_floor)
            for gi in np.flatnonzero((groups["cell_type"] == ctx).to_numpy()):
                x = cells(in_ctx & (obs["target_gene"] == groups.target_gene.iloc[gi]).to_numpy())
                z[gi] = (np.median(x, axis=0) - med) / mad
    return z
