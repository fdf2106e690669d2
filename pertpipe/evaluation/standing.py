"""Can this dataset rank models, and where does each row stand against the strongest baseline?

* :func:`avg_scores`: cell-eval score's avg_score computed from per-perturbation tables (``results.csv``): each
  avg_score metric's mean over perturbations, scaled against the cell-mean baseline's mean the way
  ``cell-eval score`` scales it (best value 0: (b - u) / b; best value 1: (u - b) / (1 - b); NaN -> 0; clipped at
  0), then averaged. On the full set of perturbations it is the leaderboard's avg_score.
* :func:`paired_bootstrap`: the paired bootstrap of Δ avg_score = row − reference row over perturbations
  (resampled within each seed when several seeds are pooled): mean and 95 % interval. A row whose interval covers 0
  is a **tie** with the reference.
* :func:`split_half_ceiling`: a replicate of the experiment as a "prediction": each held-out perturbation's (and the
  controls') truth cells split in two halves at random, half A scored against half B with the local scorer, beside
  the cell-mean baseline scored against the same half B. Its avg_score is what a perfect-but-noisy model could reach
  on this truth; where even it cannot be told from the baseline (its bootstrap interval covers 0) the dataset
  **cannot rank models** on that score.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

N_BOOT = 2000


def scored_metrics() -> dict[str, tuple[str, float]]:
    """name -> (cell-eval column, best value) of the metrics avg_score averages."""
    from pertpipe.evaluation.metric_registry import metrics

    return {m.name: (m.column, float(m.best)) for m in metrics(in_avg_score=True)}


def scaled(user: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """``cell-eval score``'s scaling of metric means ``user`` against ``base`` (per metric name), clipped at 0."""
    out = {}
    for name, (_col, best) in scored_metrics().items():
        u, b = np.float64(user[name]), np.float64(base[name])
        with np.errstate(divide="ignore", invalid="ignore"):
            v = (b - u) / b if best == 0.0 else (u - b) / (1.0 - b)
        out[name] = 0.0 if not np.isfinite(v) else max(float(v), 0.0)
    return out


def _means(table: pd.DataFrame, idx: np.ndarray | None = None) -> dict[str, float]:
    t = table if idx is None else table.iloc[idx]
    return {name: float(np.nanmean(t[col].to_numpy(dtype=float))) for name, (col, _b) in scored_metrics().items()}


def avg_scores(table: pd.DataFrame, baseline: pd.DataFrame, idx: np.ndarray | None = None) -> float:
    """avg_score of per-perturbation ``table`` against per-perturbation ``baseline`` (rows aligned), on rows ``idx``."""
    s = scaled(_means(table, idx), _means(baseline, idx))
    return float(np.mean(list(s.values())))


def _aligned(tables: list[pd.DataFrame]) -> list[pd.DataFrame]:
    keys = sorted(set.intersection(*(set(t["perturbation"]) for t in tables)))
    return [t.set_index("perturbation").loc[keys].reset_index() for t in tables]


def _values(table: pd.DataFrame) -> np.ndarray:
    """The avg_score metrics of a per-perturbation table as a (perturbations x metrics) float array."""
    return np.column_stack([table[col].to_numpy(dtype=float) for col, _b in scored_metrics().values()])


def boot_avg_scores(table: np.ndarray, baseline: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """:func:`avg_scores` of every bootstrap resample at once: ``table`` / ``baseline`` from :func:`_values` (rows
    aligned), ``idx`` (resamples x perturbations) row numbers; returns one avg_score per resample."""
    best = np.array([b for _c, b in scored_metrics().values()])
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample: NaN -> 0 below
        u, b = np.nanmean(table[idx], axis=1), np.nanmean(baseline[idx], axis=1)
        v = np.where(best == 0.0, (b - u) / b, (u - b) / (1.0 - b))
    v = np.where(np.isfinite(v), np.maximum(v, 0.0), 0.0)
    return v.mean(axis=1)


def _resamples(rng: np.random.Generator, sizes: list[int], n_boot: int) -> list[np.ndarray]:
    """Per run, ``n_boot`` resamples of its perturbations (drawn in the order the one-at-a-time loop drew them)."""
    draws: list[list[np.ndarray]] = [[] for _ in sizes]
    for _ in range(n_boot):
        for j, n in enumerate(sizes):
            draws[j].append(rng.integers(0, n, n))
    return [np.stack(d) if d else np.zeros((0, n), int) for d, n in zip(draws, sizes)]


def paired_bootstrap(runs: list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]], *, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, float]:
    """Δ avg_score (row − reference) over ``runs`` = [(row results, reference results, cell-mean baseline results)]
    (one per seed; per-perturbation tables), averaged over runs; perturbations resampled with replacement within
    each run (all resamples computed at once). Returns the point estimate, the 95 % interval and whether it covers
    0 (``tie``)."""
    rng = np.random.default_rng(seed)
    aligned = [_aligned(list(r)) for r in runs]
    point = float(np.mean([avg_scores(a, c) - avg_scores(b, c) for a, b, c in aligned]))
    idx = _resamples(rng, [len(a) for a, _b, _c in aligned], n_boot)
    boots = np.mean([boot_avg_scores(_values(a), _values(c), i) - boot_avg_scores(_values(b), _values(c), i)
                     for (a, b, c), i in zip(aligned, idx)], axis=0)
    lo, hi = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
    return {"delta": point, "ci_low": lo, "ci_high": hi, "tie": bool(lo <= 0.0 <= hi),
            "perturbations": int(sum(len(a[0]) for a in aligned)), "runs": len(aligned)}


def standing(delta: dict[str, float]) -> str:
    """``better`` / ``worse`` than the reference, or ``tie`` when the interval covers 0."""
    if delta["tie"]:
        return "tie"
    return "better" if delta["delta"] > 0 else "worse"


def _halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of two random halves of every label's rows (labels with < 2 rows are left out)."""
    a, b = [], []
    for lab in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == lab))
        if len(rows) < 2:
            continue
        h = len(rows) // 2
        a.append(rows[:h])
        b.append(rows[h:])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def split_half_ceiling(truth: str | os.PathLike, baseline: str | os.PathLike, *, seed: int = 0,
                       n_boot: int = N_BOOT) -> dict[str, Any]:
    """The split-half replicate ceiling of ``truth`` (local scorer) and the cell-mean ``baseline`` file scored against
    the same half. Returns per-perturbation tables of both, the ceiling's avg_score with its bootstrap interval, and
    the verdict ``can_rank`` (the interval excludes 0)."""
    from pertpipe.core.h5io import RowReader
    from pertpipe.evaluation.de import Expression
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.scoring import ScoringContext

    real = Expression.read(truth)
    half_a, half_b = _halves(real.labels, np.random.default_rng(seed))
    a = Expression(RowReader(truth, rows=half_a), real.labels[half_a], real.genes)
    b = Expression(RowReader(truth, rows=half_b), real.labels[half_b], real.genes)
    def table(pred: Expression) -> pd.DataFrame:  # the avg_score metrics only (the rest are not scaled)
        ctx = ScoringContext(b, pred)
        t = pd.DataFrame({"perturbation": ctx.perturbations})
        for m in metrics(in_avg_score=True):
            values = m.local(ctx)
            t[m.column] = [values.get(k, m.missing) for k in t["perturbation"]]
        return t

    ceiling = table(a)
    base = table(Expression.read(baseline))
    ceiling, base = _aligned([ceiling, base])
    rng = np.random.default_rng(seed + 1)
    boots = boot_avg_scores(_values(ceiling), _values(base), _resamples(rng, [len(ceiling)], n_boot)[0])
    lo, hi = (float(x) for x in np.quantile(boots, [0.025, 0.975]))
    per_metric = scaled(_means(ceiling), _means(base))
    return {"avg_score": avg_scores(ceiling, base), "ci_low": lo, "ci_high": hi, "can_rank": bool(lo > 0.0),
            "scaled": per_metric, "perturbations": int(len(ceiling)),
            "cells": {"half_a": int(len(half_a)), "half_b": int(len(half_b))},
            "tables": {"ceiling": ceiling.to_dict(orient="list"), "baseline": base.to_dict(orient="list")}}


def cached_ceiling(truth: str | os.PathLike, baseline: str | os.PathLike, *, seed: int = 0, n_boot: int = N_BOOT,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`split_half_ceiling`, from the scoring cache when the same truth, baseline and seed computed it before
    (:mod:`pertpipe.evaluation.cache`); ``cache`` = hit or built says which."""
    import json
    from pathlib import Path

    from pertpipe.evaluation.cache import cache_key, cached_folder
    from pertpipe.io import write_json

    key = (cache_key([truth, baseline], {"seed": seed, "n_boot": n_boot, "what": "split_half_ceiling"})
           if cache_dir else "")

    def build(dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        write_json(split_half_ceiling(truth, baseline, seed=seed, n_boot=n_boot), dest / "ceiling.json")

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        hit = cached_folder(cache_dir, "ceiling", key, Path(tmp) / "c", build)
        out = json.loads((Path(tmp) / "c" / "ceiling.json").read_text())
    return {**out, "cache": "hit" if hit else "built"}


def significant_de(real_de: str | os.PathLike, *, fdr: float = 0.05) -> dict[str, int]:
    """Significant DE genes (FDR < ``fdr``) per held-out perturbation, from a ``real_de.csv`` (cell-eval's or ours)."""
    de = pd.read_csv(real_de)
    sig = de[de["fdr"] < fdr].groupby("target").size()
    return {t: int(sig.get(t, 0)) for t in sorted(set(de["target"]))}


def verdict(ceiling: dict[str, Any], sig_de: dict[str, int]) -> str:
    """The sentence the report leads with."""
    med = float(np.median(list(sig_de.values()))) if sig_de else 0.0
    ci = f"[{ceiling['ci_low']:+.3f}, {ceiling['ci_high']:+.3f}]"
    if ceiling["can_rank"]:
        return (f"This dataset can rank models on avg_score: a split-half replicate of the experiment scores "
                f"{ceiling['avg_score']:.3f} (95 % CI {ci}) above the cell-mean baseline; the held-out perturbations "
                f"have a median of {med:g} significant DE genes.")
    return (f"This dataset cannot rank models on avg_score: even a split-half replicate of the experiment scores "
            f"{ceiling['avg_score']:.3f} (95 % CI {ci}), not distinguishable from the cell-mean baseline; the held-out "
            f"perturbations have a median of {med:g} significant DE genes. Differences between rows are noise.")


STANDING_COLUMNS = ["vs_baseline", "delta", "ci_low", "ci_high", "standing"]


def add_standing(board: pd.DataFrame, results: dict[str, str | os.PathLike], baseline_results: str | os.PathLike,
                 baselines: list[str], *, seed: int = 0) -> pd.DataFrame:
    """The board with, per row, Δ avg_score against the strongest baseline row (highest avg_score among
    ``baselines``), its paired bootstrap 95 % interval over perturbations and the standing (better / worse / tie)."""
    board = board.copy()
    present = [b for b in baselines if b in set(board["model"])]
    board["baseline"] = board["model"].isin(present)
    for c in STANDING_COLUMNS:
        board[c] = None
    if not present:
        return board
    best = board[board["model"].isin(present)].sort_values("avg_score", ascending=False)["model"].iloc[0]
    base = pd.read_csv(baseline_results)
    ref = pd.read_csv(results[best])
    for i, row in board.iterrows():
        if row["model"] == best:
            board.loc[i, ["vs_baseline", "standing"]] = [best, "strongest baseline"]
            continue
        d = paired_bootstrap([(pd.read_csv(results[row["model"]]), ref, base)], seed=seed)
        board.loc[i, STANDING_COLUMNS] = [best, d["delta"], d["ci_low"], d["ci_high"], standing(d)]
    return board


def paired_mean_bootstrap(x: pd.Series, y: pd.Series, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Δ = mean over keys of (x − y), paired on the keys both score (index alignment, NaN pairs left out), with the
    95 % interval of the keys resampled with replacement: the verdict of the signatures (per signature) and labels
    (per readout gene) leaderboards."""
    d = (x - y).dropna().to_numpy(dtype=float)
    if not len(d):
        return {"delta": None, "ci_low": None, "ci_high": None, "tie": True, "n": 0}
    boots = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    lo, hi = (float(v) for v in np.quantile(boots, [0.025, 0.975]))
    return {"delta": float(d.mean()), "ci_low": lo, "ci_high": hi, "tie": bool(lo <= 0.0 <= hi), "n": int(len(d))}


def add_paired_standing(board: pd.DataFrame, values: dict[str, pd.Series], baselines: list[str], *, score: str,
                        seed: int = 0) -> pd.DataFrame:
    """The board with the verdict columns of the cells leaderboard (``baseline`` and :data:`STANDING_COLUMNS`):
    per row, Δ ``score`` against the strongest baseline (the baseline row with the highest ``score``), paired per
    key of ``values`` (row -> per-key scores) with its bootstrap 95 % interval, and the standing. Rows without
    values (published rows) get none."""
    board = board.copy()
    present = [b for b in baselines if b in set(board["model"]) and b in values]
    board["baseline"] = board["model"].isin(present)
    for c in STANDING_COLUMNS:
        board[c] = None
    if not present:
        return board
    best = board[board["model"].isin(present)].sort_values(score, ascending=False)["model"].iloc[0]
    for i, row in board.iterrows():
        m = row["model"]
        if m == best:
            board.loc[i, ["vs_baseline", "standing"]] = [best, "strongest baseline"]
        elif m in values:
            d = paired_mean_bootstrap(values[m], values[best], seed=seed)
            if d["delta"] is not None:
                board.loc[i, STANDING_COLUMNS] = [best, d["delta"], d["ci_low"], d["ci_high"], standing(d)]
    return board


def dataset_standing(ceiling: dict[str, Any], real_de: str | os.PathLike) -> dict[str, Any]:
    """standing.json: the verdict, the split-half ceiling (without its tables) and the truth's significant DE genes."""
    sig = significant_de(real_de)
    return {"verdict": verdict(ceiling, sig), "can_rank": ceiling["can_rank"],
            "ceiling": {k: v for k, v in ceiling.items() if k != "tables"}, "sig_de_genes": sig,
            "sig_de_median": float(np.median(list(sig.values()))) if sig else 0.0}
