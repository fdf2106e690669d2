"""VCC 2026 scoring: the real ``cell-eval2`` with its ``vcc2026`` preset, on counts.

The 2026 challenge scores counts (``input_type: counts``) with six metrics, each scaled between the dataset's
generic-response baseline (the mean perturbation of the real data = 0) and a split-half replicate of the experiment
(the *replicate anchor* = 1): ``from_replicate``, whose mean is the competition's avg_score. Per dataset:

1. :func:`write_real_counts`: the truth cells' raw counts (``layers["counts"]`` of the validation split, the same cells
   as ``truth.h5ad``), streamed;
2. :func:`build_bundle`: ``cell-eval2 baseline --preset vcc2026 --save-pred`` (the 0 end) and ``cell-eval2
   prep-real-bundle`` (both ends and the split-half replicate anchor, the 1 end);

per scored row:

3. :func:`to_counts`: our predictions are log1p of counts normalised to ``target_sum``; each predicted cell becomes
   counts = rint(expm1(x) · r), where r = (library size / target_sum) of a training control cell of the same cell type
   drawn at random (seeded per row, so every model gets the same draws), with r read off the control cell itself
   (sum of its counts over sum of expm1 of its log1p row). A predicted cell is thus given the library size of a real
   control cell of its context, as the VCC 2026 submissions must give counts;
4. :func:`score`: ``cell-eval2 run --preset vcc2026`` and ``cell-eval2 score --real-bundle``.

Data without raw counts (log1p-only sources) cannot be scored this way; the bundle step says so.

Submissions (``stage1.split.submission: true``): :func:`write_submission` writes each row's predictions as the 2026
challenge takes them (raw counts, no control cells, a ``context`` column from ``evaluation.vcc2026_contexts``) and
:func:`prep_submission` packages them with the real ``vcc prep`` of ``vcc-cli`` (MIT), which checks the gene set, the
contexts, the perturbation list and cells per perturbation, integer counts and the per-cell cap.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.errors import ContractError, PertpipeError
from pertpipe.io import run_tool

log = logging.getLogger(__name__)

PRESET = "vcc2026"
PERT_COL = "target_gene"


class CellEval2Error(PertpipeError):
    """cell-eval2 failed; the message carries its last words."""


def _exe() -> list[str]:
    exe = shutil.which("cell-eval2") or str(Path(sys.executable).with_name("cell-eval2"))
    if not Path(exe).exists():
        raise CellEval2Error("cell-eval2 is not installed. Fix: pip install cell-eval2==0.20.0 (requirements.txt), or "
                             "set evaluation.profile: vcc2025")
    return [exe]


def _run(args: list[str], what: str, log_file: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return run_tool(_exe() + args, f"cell-eval2 {what}", error_cls=CellEval2Error, log_file=log_file)


def _common() -> list[str]:
    return ["--preset", PRESET, "--pert-col", PERT_COL, "--control", CONTROL_LABEL]


def has_counts(path: str | os.PathLike) -> bool:
    with H5adReader(path) as r:
        return "counts" in r.layers()


def write_real_counts(val: str | os.PathLike, truth: str | os.PathLike, dest: str | os.PathLike, *,
                      chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """The truth cells' raw counts (the validation split's ``layers["counts"]`` rows that ``truth.h5ad`` holds) as X,
    with obs target_gene and cell_type, written chunk by chunk."""
    with H5adReader(truth) as t:
        keep_names = t.obs.index
    with H5adReader(val) as r:
        if "counts" not in r.layers():
            raise ContractError(val, "layers['counts']", "no raw counts: VCC 2026 scores counts",
                                "use a source with raw counts, or set evaluation.profile: vcc2025")
        mask = r.obs.index.isin(keep_names)
        obs = r.obs.loc[mask, [PERT_COL, "cell_type"]].astype(str)
        with H5adWriter(dest, obs=obs, var=pd.DataFrame(index=r.var_names)) as w:
            for _s, _e, block in r.iter_chunks(chunk_size, "counts", mask):
                w.append(block.astype(np.float32))
    return {"cells": int(mask.sum()), "perturbations": int(obs[PERT_COL].nunique()) - 1}


def build_bundle(real_counts: str | os.PathLike, outdir: str | os.PathLike, *, seed: int = 0,
                 log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``cell-eval2 baseline`` (the generic-response baseline's prediction) + ``cell-eval2 prep-real-bundle`` into
    ``outdir/bundle``; returns both ends of the scale: the baseline's aggregate means and the split-half replicate
    anchor's values (the ceiling)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    from pertpipe.evaluation.tool_batch import run_batch

    base_pred = out / "baseline_pred.h5ad"
    run_batch("cell-eval2", [  # both calls in one process (cell-eval2 imported once)
        ("baseline", ["baseline", "-ar", str(real_counts), "-o", str(out / "baseline"), "--seed", str(seed),
                      "--save-pred", str(base_pred), *_common()]),
        ("bundle", ["prep-real-bundle", "--real", str(real_counts), "--baseline", str(base_pred), "-o",
                    str(out / "bundle"), "--anchor-base-seed", str(seed), "--force", *_common()])],
        "cell-eval2 baseline / prep-real-bundle", error_cls=CellEval2Error, log_file=log_file)
    base_pred.unlink()  # the bundle holds the aggregates; the prediction was only its input
    agg = pd.read_csv(out / "baseline" / "baseline_agg.csv").set_index("statistic")
    return {"baseline_mean": {c: float(agg.loc["mean", c]) for c in agg.columns},
            "replicate_ceiling": anchor_values(out / "bundle")}


def real_bundle(val: str | os.PathLike, truth: str | os.PathLike, files: str | os.PathLike, *, seed: int = 0,
                chunk_size: int = DEFAULT_CHUNK, log_file: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The dataset's scoring bundle in folder ``files`` (:func:`write_real_counts` + :func:`build_bundle`), taken from
    the scoring cache when the same truth, validation split, seed and cell-eval2 version built it before
    (:mod:`pertpipe.evaluation.cache`). Returns the bundle's summary, with ``cache`` = hit or built."""
    from pertpipe.evaluation.cache import cache_key, cached_folder
    from pertpipe.io import read_json, write_json

    key = cache_key([val, truth], {"seed": seed, "preset": PRESET, "versions": versions()}) if cache_dir else ""

    def build(dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        real = write_real_counts(val, truth, dest / "real_counts.h5ad", chunk_size=chunk_size)
        info = {**real, **build_bundle(dest / "real_counts.h5ad", dest, seed=seed, log_file=log_file),
                "versions": versions()}
        write_json(info, dest / "bundle_info.json")

    hit = cached_folder(cache_dir, "vcc2026-bundle", key, files, build)
    return {**read_json(Path(files) / "bundle_info.json"), "cache": "hit" if hit else "built"}


def library_ratios(train: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK) -> pd.DataFrame:
    """Per training control cell: its cell type and r = library size / target_sum (sum of its counts over the sum of
    expm1 of its log1p row), read chunk by chunk."""
    with H5adReader(train) as r:
        if "counts" not in r.layers():
            raise ContractError(train, "layers['counts']", "no raw counts to take library sizes from",
                                "use a source with raw counts, or set evaluation.profile: vcc2025")
        ctrl = (r.obs[PERT_COL].astype(str) == CONTROL_LABEL).to_numpy()
        cts = r.obs.loc[ctrl, "cell_type"].astype(str).to_numpy()
        num, den = [], []
        for (_s, _e, c), (_s2, _e2, x) in zip(r.iter_chunks(chunk_size, "counts", ctrl),
                                              r.iter_chunks(chunk_size, None, ctrl)):
            num.append(np.asarray(c.sum(axis=1)).ravel())
            den.append(np.asarray(x.expm1().sum(axis=1)).ravel())
    num, den = np.concatenate(num), np.concatenate(den)
    ratio = np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)
    return pd.DataFrame({"cell_type": cts, "ratio": ratio})[ratio > 0].reset_index(drop=True)


def to_counts(pred: str | os.PathLike, train: str | os.PathLike, dest: str | os.PathLike, *, seed: int,
              chunk_size: int = DEFAULT_CHUNK, contexts: dict[str, str] | None = None) -> dict[str, Any]:
    """Predicted log1p cells -> counts with library sizes drawn from the matching training control cells (see the
    module docstring); the draws are seeded by ``seed`` and the row number, so they do not depend on the model.
    With ``contexts`` (cell type -> challenge context label) the file is a 2026 submission: control cells left out,
    obs ``target_gene`` and ``context``. Written chunk by chunk (memory: one chunk)."""
    from pertpipe.core.h5io import RowReader

    ratios = library_ratios(train, chunk_size=chunk_size)
    pools = {ct: g["ratio"].to_numpy() for ct, g in ratios.groupby("cell_type")}
    every = ratios["ratio"].to_numpy()
    with H5adReader(pred) as r:
        obs = r.obs[[PERT_COL, "cell_type"]].astype(str)
        var = pd.DataFrame(index=r.var_names)
    rows = RowReader(pred)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2026]))
    draws = np.array([rng.choice(pools.get(ct, every)) for ct in obs["cell_type"]])
    keep = np.ones(len(obs), bool)
    out_obs = obs
    if contexts is not None:
        keep = (obs[PERT_COL] != CONTROL_LABEL).to_numpy()
        out_obs = pd.DataFrame({PERT_COL: obs[PERT_COL], "context": obs["cell_type"].map(contexts)})[keep]
    with H5adWriter(dest, obs=out_obs, var=var) as w:
        for start in range(0, len(obs), chunk_size):
            idx = np.arange(start, min(start + chunk_size, len(obs)))
            idx = idx[keep[idx]]
            if not len(idx):
                continue
            x = rows.dense(idx) if rows.encoding == "array" else rows[idx].toarray()
            w.append(sp.csr_matrix(np.rint(np.expm1(np.asarray(x, dtype=np.float64)) * draws[idx, None])
                                   .astype(np.float32)))
    return {"cells": int(keep.sum()), "median_library_ratio": float(np.median(draws)) if len(draws) else None}


def score(pred_counts: str | os.PathLike, real_counts: str | os.PathLike, bundle: str | os.PathLike, *,
          agg_out: str | os.PathLike, meta_out: str | os.PathLike,
          log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``cell-eval2 run --preset vcc2026`` and ``score --real-bundle`` of one prediction (:func:`score_many`)."""
    return score_many([(str(pred_counts), pred_counts, agg_out, meta_out)], real_counts, bundle, log_file=log_file)[0]


def score_many(items: list[tuple[str, str | os.PathLike, str | os.PathLike, str | os.PathLike]],
               real_counts: str | os.PathLike, bundle: str | os.PathLike, *,
               log_file: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """``items`` = [(label, predicted counts, agg_out, meta_out)]: per item ``cell-eval2 run --preset vcc2026`` (its
    aggregate and run metadata kept at ``agg_out`` / ``meta_out``) and ``cell-eval2 score --real-bundle``, every
    call in one process (:mod:`pertpipe.evaluation.tool_batch`); per item what :func:`score_agg` returns."""
    from pertpipe.evaluation.tool_batch import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        calls = []
        for i, (label, pred, _agg, _meta) in enumerate(items):
            run_dir = Path(tmp) / f"run_{i}"
            calls += [(label, ["run", "-ap", str(pred), "-ar", str(real_counts), "-o", str(run_dir), *_common()]),
                      (label, _score_args(run_dir / "agg_results.csv", run_dir / "run_meta.json", bundle,
                                          Path(tmp) / f"score_{i}.csv"))]
        run_batch("cell-eval2", calls, "cell-eval2 run", error_cls=CellEval2Error, log_file=log_file)
        out = []
        for i, (_label, _pred, agg_out, meta_out) in enumerate(items):
            shutil.copyfile(Path(tmp) / f"run_{i}" / "agg_results.csv", agg_out)
            shutil.copyfile(Path(tmp) / f"run_{i}" / "run_meta.json", meta_out)
            out.append(_score_result(Path(tmp) / f"score_{i}.csv", agg_out))
    return out


def _score_args(agg: str | os.PathLike, meta: str | os.PathLike, bundle: str | os.PathLike,
                out: str | os.PathLike) -> list[str]:
    return ["score", "--user-agg", str(agg), "--user-meta", str(meta), "--real-bundle", str(bundle), "-o", str(out)]


def score_agg(agg: str | os.PathLike, meta: str | os.PathLike, bundle: str | os.PathLike, *,
              log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``cell-eval2 score --real-bundle`` of a run's aggregate: per scored metric its raw mean, ``from_baseline`` and
    ``from_replicate`` (0 = the generic-response baseline, 1 = the split-half replicate anchor), and the competition
    avg_score (the mean of ``from_replicate``)."""
    with tempfile.TemporaryDirectory() as tmp:
        _run(_score_args(agg, meta, bundle, Path(tmp) / "score.csv"), "score", log_file)
        return _score_result(Path(tmp) / "score.csv", agg)


def _score_result(score_csv: str | os.PathLike, agg: str | os.PathLike) -> dict[str, Any]:
    scored = pd.read_csv(score_csv).set_index("metric")
    means = pd.read_csv(agg).set_index("statistic")
    metrics = [m for m in scored.index if m != "avg_score"]
    return {"profile": PRESET, "metrics": {m: {"raw": float(means.loc["mean", m]),
                                               "from_baseline": _num(scored.loc[m, "from_baseline"]),
                                               "from_replicate": _num(scored.loc[m, "from_replicate"])}
                                           for m in metrics},
            "avg_score": _num(scored.loc["avg_score", "from_replicate"]),
            "avg_from_baseline": float(np.nanmean([_num(scored.loc[m, "from_baseline"]) for m in metrics])),
            "versions": versions()}


def anchor_values(bundle: str | os.PathLike) -> dict[str, float]:
    """The split-half replicate's value of every metric (the 1 end of the scale), from the bundle."""
    a = pd.read_parquet(Path(bundle) / "anchor_agg.parquet")
    return {str(m): float(v) for m, v in zip(a["metric"], a["replicate"])}


def write_submission(pred: str | os.PathLike, train: str | os.PathLike, template: pd.DataFrame,
                     contexts: dict[str, str], dest: str | os.PathLike, perts_dest: str | os.PathLike, *, seed: int,
                     chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """The 2026 submission h5ad of one row (:func:`to_counts` with ``contexts``: counts, no control cells, obs
    ``target_gene`` and ``context``) and its ``pert_counts.csv`` (context, target_gene, n_cells) from the template."""
    from pertpipe.io import atomic_path

    missing = sorted(set(template["cell_type"].astype(str)) - set(contexts))
    if missing:
        raise ContractError("config", "evaluation.vcc2026_contexts", f"no context label for cell type(s) {missing}",
                            "map every cell type of the template to its challenge context, e.g. {H1: A}")
    info = to_counts(pred, train, dest, seed=seed, chunk_size=chunk_size, contexts=contexts)
    t = template[template[PERT_COL] != CONTROL_LABEL].assign(context=lambda d: d["cell_type"].astype(str).map(contexts))
    with atomic_path(perts_dest) as tmp:
        t.groupby(["context", PERT_COL], as_index=False)["n_cells"].sum().to_csv(tmp, index=False)
    return {**info, "contexts": sorted({contexts[c] for c in template["cell_type"].astype(str)})}


def prep_submission(h5ad: str | os.PathLike, genes: str | os.PathLike, perts: str | os.PathLike,
                    contexts: list[str], dest: str | os.PathLike, *,
                    log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``vcc prep`` (vcc-cli): validate and package the submission as the 2026 challenge expects -> ``dest`` .vcc."""
    import json

    exe = shutil.which("vcc") or str(Path(sys.executable).with_name("vcc"))
    if not Path(exe).exists():
        raise CellEval2Error("vcc-cli is not installed. Fix: pip install vcc-cli==0.3.0 (requirements.txt)")
    n_genes = sum(1 for line in Path(genes).read_text().splitlines() if line.strip())
    tmp = Path(dest).with_name(f".{Path(dest).name}.tmp.vcc")
    cmd = [exe, "prep", str(h5ad), "-g", str(genes), "--perts", str(perts), "--contexts", ",".join(contexts),
           "--expected-gene-dim", str(n_genes), "-o", str(tmp), "--force", "--json"]
    proc = run_tool(cmd, f"vcc prep of {h5ad}", error_cls=CellEval2Error, log_file=log_file, said="vcc")
    os.replace(tmp, dest)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _num(v: Any) -> float | None:
    return None if pd.isna(v) else float(v)


def versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for pkg in ("cell-eval2", "vcc-cli"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def columns(result: dict[str, Any]) -> dict[str, Any]:
    """Leaderboard columns of one row's vcc2026.json: each metric's raw mean and its replicate-scaled score, and the
    competition avg_score; all None where the dataset could not be scored (no counts)."""
    if "metrics" not in result:
        return {"vcc2026_avg_score": None}
    out = {}
    for m, v in result["metrics"].items():
        out[f"vcc2026_{m}"] = v["raw"]
        out[f"vcc2026_{m}_scaled"] = v["from_replicate"]
    out["vcc2026_avg_score"] = result["avg_score"]
    return out

