"""Validated shrinkage of a model's predicted change toward the training mean shift.

On real counts a deep model's own change can be worse than the plain mean shift of the training
perturbations (the ``cell_mean`` baseline), e.g. when the truth carries little signal. Shrinkage guards
against that: a predicted cell becomes

    x = clip((1 - λ) · (x_ctrl + a_ct) + λ · x_model, 0)

with ``a_ct`` the mean shift over the fitted training perturbations in cell type ``ct`` (what ``cell_mean``
adds) and λ ∈ [0, 1]. λ is chosen on the model's held-out training perturbations (never fitted, so the
choice is honest): for each λ in a grid, the mean absolute error of the predicted pseudobulk against the
observed one, per held-out (target, cell type) group. Few groups make that choice noisy, so it follows the
one-standard-error rule toward the mean shift: the smallest λ whose error exceeds the best λ's by no more
than one standard error of the paired (per-group) difference. The anchor used in that choice leaves the held-out targets out; the one applied afterwards is
the mean over every training perturbation. λ = 1 is the model as it is, λ = 0 the mean shift. ``model_params.<model>.shrinkage``: ``auto``
(validated), ``none`` (λ = 1) or a number in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe.errors import ConfigError

GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def check_setting(value: Any, *, model: str) -> None:
    """``auto``, ``none`` or a number in [0, 1]; anything else is a config error naming the field."""
    if value in ("auto", "none"):
        return
    try:
        ok = 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"model_params.{model}.shrinkage is {value!r}. Fix: use auto, none or a number in [0, 1]")


@dataclass
class Shrinkage:
    """λ and the per-cell-type anchor shifts; :meth:`apply` turns model cells into shrunk cells."""

    lam: float
    anchor: dict[str, np.ndarray]
    default_anchor: np.ndarray
    mae_by_lambda: dict[str, float] = field(default_factory=dict)
    groups: int = 0
    how: str = "validated"

    def apply(self, x_model: np.ndarray, x_ctrl: np.ndarray, cell_type: str) -> np.ndarray:
        if self.lam >= 1.0:
            return x_model
        a = self.anchor.get(cell_type, self.default_anchor)
        x = (1 - self.lam) * (x_ctrl + a) + self.lam * x_model
        return np.clip(x, 0, None, out=x)

    def state(self) -> dict[str, Any]:
        return {"lam": self.lam, "anchor": self.anchor, "default_anchor": self.default_anchor,
                "mae_by_lambda": self.mae_by_lambda, "groups": self.groups, "how": self.how}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Shrinkage:
        return cls(float(s["lam"]), {k: np.asarray(v) for k, v in s["anchor"].items()}, np.asarray(s["default_anchor"]),
                   dict(s.get("mae_by_lambda", {})), int(s.get("groups", 0)), str(s.get("how", "validated")))

    def log(self) -> dict[str, Any]:
        return {"lambda": self.lam, "how": self.how, "groups": self.groups, "mae_by_lambda": self.mae_by_lambda}


def anchor_shifts(summary: Any, exclude: set[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mean shift (target mean - control mean) over training targets not in ``exclude``, per cell type and overall."""
    means = summary.target_ct_means
    keep = ~means.index.get_level_values(0).isin(sorted(exclude))
    if not keep.any():
        keep = np.ones(len(means), bool)
    m = means[keep]
    cts = m.index.get_level_values(1)
    deltas = m.to_numpy() - summary.control_ct_means.loc[cts].to_numpy()
    per_ct = {ct: deltas[np.asarray(cts == ct)].mean(0) for ct in sorted(set(cts))}
    return per_ct, deltas.mean(0)


def choose_shrinkage(model: Any, summary: Any, val_targets: set[str], controls: Any, *, setting: Any = "auto",
                     seed: int = 0, n_cells: int = 200, grid: tuple[float, ...] = GRID) -> Shrinkage:
    """Pick λ for ``model`` (already fitted) on its held-out training targets ``val_targets``.

    ``summary`` is the training :class:`~pertpipe.models.base.TrainingSummary`, ``controls`` the training
    :class:`~pertpipe.models.base.ControlCells`. With no held-out targets ``auto`` keeps λ = 1 and says so.
    """
    if setting != "auto":  # nothing is chosen: the anchor is the mean over every training perturbation
        anchor, default = anchor_shifts(summary, set())
        return Shrinkage(1.0 if setting == "none" else float(setting), anchor, default,
                         how="none" if setting == "none" else "fixed")
    anchor, default = anchor_shifts(summary, set(val_targets))
    rng = np.random.default_rng(seed)
    groups = [(t, ct) for t, ct in summary.target_ct_means.index if t in val_targets]
    if not groups:
        return Shrinkage(1.0, anchor, default, how="no held-out training targets: none")
    errors = []
    for t, ct in groups:
        pool = np.flatnonzero((controls.obs.cell_type == ct).to_numpy())
        if len(pool) == 0:
            continue
        batch = controls.obs.batch.iloc[pool].value_counts().index[0]
        pool = pool[(controls.obs.batch.iloc[pool] == batch).to_numpy()]
        pick = rng.choice(pool, size=n_cells, replace=len(pool) < n_cells)
        x_ctrl = controls.x[pick].toarray().astype(np.float64)
        x_model = np.asarray(model.predict_cells(t, ct, batch, controls, pick, rng), dtype=np.float64)
        truth = summary.target_ct_means.loc[(t, ct)].to_numpy()
        a = anchor.get(ct, default)
        errors.append([np.abs(np.clip((1 - lam) * (x_ctrl + a) + lam * x_model, 0, None).mean(0) - truth).mean()
                       for lam in grid])
    if not errors:
        return Shrinkage(1.0, anchor, default, how="no controls for the held-out targets: none")
    lam, mean_err = one_se_choice(np.asarray(errors), grid)
    anchor, default = anchor_shifts(summary, set())  # chosen without the held-out targets, applied with them all
    return Shrinkage(lam, anchor, default, {f"{g:g}": float(e) for g, e in zip(grid, mean_err)}, len(errors))


def one_se_choice(errors: np.ndarray, grid: tuple[float, ...]) -> tuple[float, np.ndarray]:
    """λ by the one-standard-error rule on ``errors`` [groups x grid]: the smallest λ not worse than the best
    by more than one standard error of the paired difference. Returns (λ, mean error per λ)."""
    mean = errors.mean(0)
    best = int(np.argmin(mean))
    n = errors.shape[0]
    for i in np.argsort(grid):
        diff = errors[:, i] - errors[:, best]
        se = diff.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
        if diff.mean() <= se + 1e-12:
            return float(grid[i]), mean
    return float(grid[best]), mean


def fit_shrinkage(model: Any, train_path: Any, val_targets: set[str], *, setting: Any, summary: Any = None,
                  chunk_size: int | None = None) -> Shrinkage:
    """:func:`choose_shrinkage` reading what it needs from the training split (the fitted model's end of ``fit``)."""
    from pertpipe.data.h5io import DEFAULT_CHUNK
    from pertpipe.models.base import ControlCells, TrainingSummary

    chunk_size = chunk_size or DEFAULT_CHUNK
    summary = summary if summary is not None else TrainingSummary.from_h5ad(train_path, chunk_size=chunk_size)
    controls = ControlCells.load(train_path, counts=model.uses_counts, spatial=model.uses_spatial,
                                 chunk_size=chunk_size)
    return choose_shrinkage(model, summary, set(val_targets), controls, setting=setting, seed=model.seed + 7)
