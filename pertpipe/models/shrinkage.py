"""Validated shrinkage of a model's predicted change toward the training mean shift.

On real counts a deep model's own change can be worse than the plain mean shift of the training
perturbations (the ``cell_mean`` baseline), e.g. when the truth carries little signal. Shrinkage guards
against that: a predicted cell becomes

    x = clip((1 - λ) · (x_ctrl + a_ct) + λ · x_model, 0)

with λ ∈ [0, 1] and the anchor ``a_ct`` either ``global`` (exactly what ``cell_mean`` adds: each training
target's cell-weighted mean shift, averaged over targets) or per ``cell_type`` (the mean shift of that cell
type's training targets). Anchor and λ are chosen on the model's held-out training perturbations (never fitted,
so the choice is honest): the mean absolute error of the predicted pseudobulk against the observed one, per
held-out (target, cell type) group, for every (anchor, λ). Few groups make that choice noisy, so it follows the
one-standard-error rule toward the baseline: the first candidate, in the order global λ = 0, 0.1, ..., 1, then
per cell type λ = 0, ..., 1, whose error exceeds the best candidate's by no more than one standard error of the
paired (per-group) difference. The anchor used in that choice leaves the held-out targets out; the one applied
afterwards is the mean over every training perturbation. λ = 1 is the model as it is; global λ = 0 is
``cell_mean`` and per-cell-type λ = 0 is ``celltype_mean``, prediction for prediction (:data:`EQUALS`).
``model_params.<model>.shrinkage``: ``auto`` (validated), ``none`` (λ = 1) or a number in [0, 1].

Few held-out groups cannot choose λ: with fewer than ``shrinkage_min_groups`` (default 8) held-out (target, cell
type) groups ``auto`` keeps the model raw (λ = 1) and the log says why. The pipeline scores every shrunk model twice,
``<model>_raw`` (λ = 1) and ``<model>`` (as chosen), and the leaderboard shows λ, the anchor and, at λ = 0, the
baseline the row equals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe.errors import ConfigError

GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
MIN_GROUPS = 8  # held-out (target, cell type) groups below which λ is not validated (the model is used raw)
EQUALS = {"global": "cell_mean", "cell_type": "celltype_mean"}  # the baseline a λ = 0 prediction equals, per anchor


def check_fraction(value: Any, *, field: str, words: tuple[str, ...] = ("auto", "none")) -> None:
    """One of ``words`` or a number in [0, 1]; anything else is a config error naming ``field``."""
    if value in words:
        return
    try:
        ok = 0.0 <= float(value) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{field} is {value!r}. Fix: use {', '.join(words)} or a number in [0, 1]")


def check_setting(value: Any, *, model: str) -> None:
    """The shrinkage setting: ``auto``, ``none`` or a number in [0, 1]."""
    check_fraction(value, field=f"model_params.{model}.shrinkage")


@dataclass
class Shrinkage:
    """λ and the per-cell-type anchor shifts; :meth:`apply` turns model cells into shrunk cells."""

    lam: float
    anchor: dict[str, np.ndarray]
    default_anchor: np.ndarray
    mae_by_lambda: dict[str, float] = field(default_factory=dict)
    groups: int = 0
    how: str = "validated"
    anchor_kind: str = "global"

    def apply(self, x_model: np.ndarray, x_ctrl: np.ndarray, cell_type: str) -> np.ndarray:
        if self.lam >= 1.0:
            return x_model
        a = self.anchor.get(cell_type, self.default_anchor)
        x = (1 - self.lam) * (x_ctrl + a) + self.lam * x_model
        return np.clip(x, 0, None, out=x)

    def state(self) -> dict[str, Any]:
        return {"lam": self.lam, "anchor": self.anchor, "default_anchor": self.default_anchor,
                "mae_by_lambda": self.mae_by_lambda, "groups": self.groups, "how": self.how,
                "anchor_kind": self.anchor_kind}

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Shrinkage:
        return cls(float(s["lam"]), {k: np.asarray(v) for k, v in s["anchor"].items()}, np.asarray(s["default_anchor"]),
                   dict(s.get("mae_by_lambda", {})), int(s.get("groups", 0)), str(s.get("how", "validated")),
                   str(s.get("anchor_kind", "global")))

    def log(self) -> dict[str, Any]:
        """train_log.json's ``shrinkage``: λ, the anchor, how λ was set, and the baseline the model equals at λ = 0."""
        return {"lambda": self.lam, "anchor": self.anchor_kind if self.lam < 1 else None, "how": self.how,
                "groups": self.groups,
                "equals": EQUALS[self.anchor_kind] if self.lam == 0 else None, "mae_by_lambda": self.mae_by_lambda}


def prior_shrinkage(setting: Any, prior: Any) -> Any:
    """The shrinkage setting of a model built on a validated baseline prior (:class:`pertpipe.models.prior.
    BaselinePrior`): ``auto`` becomes ``none``, since the prior was already chosen among the baselines (the cell-type
    mean among them) on cross-fitted training groups, and shrinking toward the cell-type mean would undo that choice.
    A fixed λ is kept as the user set it."""
    return "none" if (prior is not None and setting == "auto") else setting


def raw_shrinkage_log(validated: dict[str, Any] | None) -> dict[str, Any]:
    """predict.json's ``shrinkage`` for a ``<model>_raw`` row: λ = 1, beside the λ the model row uses."""
    return {"lambda": 1.0, "anchor": None, "how": "raw: the model's own prediction (λ = 1)", "equals": None,
            "validated_lambda": (validated or {}).get("lambda")}


ANCHORS = ("global", "cell_type")  # in order of preference (global: exactly what cell_mean adds)


def anchor_shifts(summary: Any, exclude: set[str], kind: str = "cell_type") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The anchor of ``kind`` (``global``: cell_mean's shift; ``cell_type``: celltype_mean's) over training targets not
    in ``exclude`` (:meth:`~pertpipe.models.summary.TrainingSummary.mean_shift`)."""
    return summary.mean_shift(kind, exclude)


def _held_out_errors(model: Any, summary: Any, groups: list[tuple[str, str]], controls: Any,
                     anchors: dict[str, tuple[dict, np.ndarray]], candidates: list[tuple[str, float]],
                     rng: np.random.Generator, n_cells: int) -> list[list[float]]:
    """Pseudobulk MAE of every (anchor, λ) candidate per held-out (target, cell type) group."""
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
        row = []
        for kind, lam in candidates:
            per_ct, default = anchors[kind]
            a = per_ct.get(ct, default)
            row.append(np.abs(np.clip((1 - lam) * (x_ctrl + a) + lam * x_model, 0, None).mean(0) - truth).mean())
        errors.append(row)
    return errors


def choose_shrinkage(model: Any, summary: Any, val_targets: set[str], controls: Any, *, setting: Any = "auto",
                     seed: int = 0, n_cells: int = 200, grid: tuple[float, ...] = GRID,
                     min_groups: int = MIN_GROUPS) -> Shrinkage:
    """Pick the anchor (global or per cell type) and λ for ``model`` (already fitted) on its held-out training
    targets ``val_targets``, by the one-standard-error rule in the order global λ = 0 ... 1, then per cell type.

    ``summary`` is the training :class:`~pertpipe.models.summary.TrainingSummary`, ``controls`` the training
    :class:`~pertpipe.models.summary.ControlCells`. With fewer than ``min_groups`` held-out (target, cell type)
    groups ``auto`` keeps λ = 1 and says so.
    """
    if setting != "auto":  # nothing is chosen: the anchor is cell_mean's shift over every training perturbation
        anchor, default = anchor_shifts(summary, set(), "global")
        return Shrinkage(1.0 if setting == "none" else float(setting), anchor, default,
                         how="none" if setting == "none" else "fixed")
    anchors = {kind: anchor_shifts(summary, set(val_targets), kind) for kind in ANCHORS}
    groups = [(t, ct) for t, ct in summary.target_ct_means.index if t in val_targets]
    if len(groups) < min_groups:
        anchor, default = anchor_shifts(summary, set(), "global")
        return Shrinkage(1.0, anchor, default, groups=len(groups),
                         how=f"raw: {len(groups)} held-out training groups, fewer than the {min_groups} needed to "
                             "validate λ (shrinkage_min_groups)")
    candidates = [(kind, lam) for kind in ANCHORS for lam in sorted(grid)]
    errors = _held_out_errors(model, summary, groups, controls, anchors, candidates, np.random.default_rng(seed),
                              n_cells)
    if len(errors) < max(min_groups, 1):  # groups whose cell type has no training controls score nothing
        anchor, default = anchor_shifts(summary, set(), "global")
        return Shrinkage(1.0, anchor, default, groups=len(errors),
                         how=f"raw: {len(errors)} scorable held-out training groups, fewer than the {min_groups} "
                             "needed to validate λ (shrinkage_min_groups)")
    i, mean_err = one_se_choice(np.asarray(errors), list(range(len(candidates))))
    kind, lam = candidates[int(i)]
    anchor, default = anchor_shifts(summary, set(), kind)  # chosen without the held-out targets, applied with them
    return Shrinkage(float(lam), anchor, default, {f"{k}:{g:g}": float(e) for (k, g), e in zip(candidates, mean_err)},
                     len(errors), how=f"validated on {len(errors)} held-out training groups", anchor_kind=kind)


def one_se_choice(errors: np.ndarray, grid) -> tuple[float, np.ndarray]:
    """The one-standard-error rule on ``errors`` [groups x candidates]: the first candidate in the order of
    ``grid`` (ascending) not worse than the best by more than one standard error of the paired difference.
    Returns (that grid value, mean error per candidate)."""
    mean = errors.mean(0)
    best = int(np.argmin(mean))
    n = errors.shape[0]
    for i in np.argsort(grid, kind="stable"):
        diff = errors[:, i] - errors[:, best]
        se = diff.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
        if diff.mean() <= se + 1e-12:
            return float(grid[i]), mean
    return float(grid[best]), mean


def fit_shrinkage(model: Any, train_path: Any, val_targets: set[str], *, setting: Any, summary: Any = None,
                  chunk_size: int | None = None, min_groups: int = MIN_GROUPS) -> Shrinkage:
    """:func:`choose_shrinkage` reading what it needs from the training split (the fitted model's end of ``fit``)."""
    from pertpipe.core.h5io import DEFAULT_CHUNK
    from pertpipe.models.summary import ControlCells, TrainingSummary

    chunk_size = chunk_size or DEFAULT_CHUNK
    summary = summary if summary is not None else TrainingSummary.from_h5ad(train_path, chunk_size=chunk_size)
    controls = ControlCells.load(train_path, counts=model.uses_counts, spatial=model.uses_spatial,
                                 chunk_size=chunk_size)
    return choose_shrinkage(model, summary, set(val_targets), controls, setting=setting, seed=model.seed + 7,
                            min_groups=min_groups)
