"""Wrappers around the real ``cell-eval`` CLI (prep, run, score) and the VCC cell-mean baseline.

The baseline the scaled scores are measured from is the ``cell_mean`` model's own prediction file (every target
predicted as its drawn controls + the mean training shift), written by the predict rule's writer with the same seed,
so a ``cell_mean`` row scores exactly 0 (:func:`build_baseline`; ``cell-eval baseline``'s constant rows have the
same idea but no cell spread, and scored apart from ``cell_mean``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter, read_obs, read_uns
from pertpipe.errors import ContractError, PertpipeError
from pertpipe.io import child_options, work_dir

log = logging.getLogger(__name__)

MAX_CELL_DIM = 200_000  # cell-eval prep's limit
def _scored() -> dict[str, str]:
    """name -> cell-eval column of the metrics cell-eval score scales (the metric table's avg_score metrics)."""
    from pertpipe.evaluation.metric_registry import metrics

    return {m.name: m.column for m in metrics(in_avg_score=True)}


class CellEvalError(PertpipeError):
    """cell-eval refused or failed; the message carries its own error text."""


def versions() -> dict[str, str]:
    """cell-eval and pdex versions: DE calls (and so DES) change between pdex versions."""
    out = {}
    for name in ("cell-eval", "pdex", "numba-mwu"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _batch(calls: list[tuple[str, list[str]]], what: str, log_file: str | os.PathLike | None = None) -> None:
    """``calls`` = [(label, cell-eval arguments)] in one process (:func:`tool_batch.run_batch`)."""
    from pertpipe.evaluation.tool_batch import run_batch

    run_batch("cell-eval", calls, f"cell-eval {what}", error_cls=CellEvalError, log_file=log_file)


def check_predictions(pred: str | os.PathLike, *, genes: list[str], truth: str | os.PathLike,
                      max_cells: int = MAX_CELL_DIM, chunk_size: int = DEFAULT_CHUNK,
                      template: str | os.PathLike | None = None) -> dict[str, Any]:
    """Refuse a prediction file cell-eval would mis-score; every message names the file and the fix.

    The perturbations must be the template's (``template.csv``, when given: a VCC submission's truth holds
    controls only) or else the truth's."""
    with H5adReader(pred) as r:
        names = [str(g) for g in r.var_names]
        obs = r.obs
        if "target_gene" not in obs.columns:
            raise ContractError(pred, "obs['target_gene']", "column missing", "predict with pertpipe's predict rule")
        if names != genes:
            missing = [g for g in genes if g not in set(names)]
            extra = [g for g in names if g not in set(genes)]
            if missing or extra:
                raise ContractError(pred, "var_names", f"{len(missing)} genes missing (e.g. {missing[:5]}), "
                                    f"{len(extra)} extra (e.g. {extra[:5]})", "predict all universe genes, in "
                                    "the order of stage1/genes.txt")
            raise ContractError(pred, "var_names", "genes are all present but in another order",
                                "write genes in the order of stage1/genes.txt")
        if r.n_obs > max_cells:
            raise ContractError(pred, "obs", f"{r.n_obs:,} cells; cell-eval prep accepts at most {max_cells:,}",
                                "lower n_cells in the template (stage1/template.csv) or subsample")
        labels = set(obs["target_gene"].astype(str))
        if CONTROL_LABEL not in labels:
            raise ContractError(pred, "obs['target_gene']", f"no '{CONTROL_LABEL}' block",
                                "include the control cells of the template")
        for start, _stop, block in r.iter_chunks(max(1, min(chunk_size, STREAM_ENTRIES // max(r.n_vars, 1)))):
            if block.nnz and not np.all(np.isfinite(block.data)):
                raise ContractError(pred, "X", f"NaN/inf values near row {start}", "fix the model's output")
            if block.nnz and block.data.min() < 0:
                raise ContractError(pred, "X", f"negative values near row {start}", "predictions are log1p, >= 0")
            if block.nnz and block.data.max() >= LOG1P_LIMIT:
                raise ContractError(pred, "X", f"value {block.data.max():.2f} near row {start}: cell-eval refuses "
                                    f"log1p data at or above {LOG1P_LIMIT:g} (raw counts, or an unbounded model "
                                    "output)", "predict log1p of normalised counts (bound the model's output, "
                                    "e.g. to the training cells' range)")
    ref = template if template is not None else truth
    truth_labels = (set(pd.read_csv(template)["target_gene"].astype(str)) if template is not None
                    else set(read_obs(truth)["target_gene"].astype(str)))
    if labels != truth_labels:
        raise ContractError(pred, "obs['target_gene']", f"perturbations differ from the {'template' if template else 'truth'} "
                            f"{ref}: missing {sorted(truth_labels - labels)[:5]}, extra "
                            f"{sorted(labels - truth_labels)[:5]}", "predict exactly the template of this split")
    p_id = read_uns(pred).get("pertpipe", {}).get("split_id")
    t_id = read_uns(truth).get("pertpipe", {}).get("split_id")
    if p_id and t_id and p_id != t_id:
        raise ContractError(truth, "uns['pertpipe']['split_id']", f"truth is from split {t_id} but the predictions "
                            f"are for split {p_id}", "re-run stage 1 and the model with the same config")
    return {"cells": int(len(obs)), "perturbations": len(labels) - 1}


#: cell-eval's guess_is_lognorm: a maximum at or above this is not log1p data (it refuses to prep or score it)
LOG1P_LIMIT = 15.0
#: stored matrix entries (cells x genes of a dense file) above which ``prep(engine="auto")`` streams: cell-eval prep
#: holds the file, a float32 copy and a CSR built through COO (~20 bytes an entry: 22.5 GB and killed at 1.17e9)
PREP_STREAM_ENTRIES = 400_000_000
PREP_ENGINES = ("auto", "cell-eval", "streaming")
RUN_ENGINES = ("auto", "cell-eval", "local")
RUN_LOCAL_ENTRIES = 600_000_000  # auto: stored predicted entries above which the local engine runs
RUN_FILES = ("results.csv", "agg_results.csv", "pred_de.csv", "real_de.csv")
VCC_COLUMNS = ("overlap_at_N", "mae", "discrimination_score_l1")  # cell-eval run --profile vcc, in its order
STREAM_ENTRIES = 1 << 25  # matrix entries per chunk where a dense file is streamed (prediction checks, prep)


def prep(pred: str | os.PathLike, genes_file: str | os.PathLike, dest: str | os.PathLike, *,
         log_file: str | os.PathLike | None = None, engine: str = "auto",
         chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """``.vcc`` archive of ``pred``, opened and checked before it is moved into place (:func:`prep_many` of one)."""
    return prep_many([(str(pred), pred, dest)], genes_file, log_file=log_file, engine=engine,
                     chunk_size=chunk_size)[0]


def prep_many(items: list[tuple[str, str | os.PathLike, str | os.PathLike]], genes_file: str | os.PathLike, *,
              log_file: str | os.PathLike | None = None, engine: str = "auto",
              chunk_size: int = DEFAULT_CHUNK) -> list[dict[str, Any]]:
    """``.vcc`` archives of ``items`` = [(label, predictions, dest)]: every archive is opened and checked before it
    is moved into place; a failure leaves none of them half-written.

    ``engine``: ``cell-eval`` runs ``cell-eval prep`` (all items in one process, :mod:`tool_batch`); ``streaming``
    writes the same archive chunk by chunk (:func:`prep_streaming`); ``auto`` runs cell-eval up to
    :data:`PREP_STREAM_ENTRIES` stored entries and streams above (VCC-size dense predictions)."""
    if engine not in PREP_ENGINES:
        raise PertpipeError(f"evaluation.prep_engine '{engine}': use one of {PREP_ENGINES}")
    with contextlib.ExitStack() as stack:
        plans, calls = [], []
        for label, pred, dest in items:
            dest = Path(dest)
            eng = engine
            if eng == "auto":
                eng = "streaming" if _stored_entries(pred) > PREP_STREAM_ENTRIES else "cell-eval"
            out = stack.enter_context(work_dir(dest.parent)) / dest.name
            if eng == "streaming":
                prep_streaming(pred, genes_file, out, chunk_size=chunk_size)
            else:
                calls.append((label, ["prep", "-i", str(pred), "-g", str(genes_file), "-o", str(out)]))
            plans.append((out, dest, eng))
        _batch(calls, "prep", log_file)
        infos = []
        for out, dest, eng in plans:
            if not out.exists():
                raise CellEvalError(f"cell-eval prep wrote no archive at {out}")
            infos.append({**inspect_vcc(out), "engine": eng})
        for out, dest, _eng in plans:
            os.replace(out, dest)
    return infos


def prep_streaming(pred: str | os.PathLike, genes_file: str | os.PathLike, dest: str | os.PathLike, *,
                   chunk_size: int = DEFAULT_CHUNK) -> None:
    """What ``cell-eval prep`` (0.8.2, default 32-bit encoding) writes, without holding the matrix: ``pred.h5ad``
    with X as float32 CSR (explicit zeros dropped), obs = ``target_gene`` only with index "0".."n-1", var = the
    gene names; zstd-compressed (``zstd -T0``) and tarred with ``watermark.txt`` ('vcc-prep'). Like cell-eval,
    it refuses data whose values are all integers (counts: cell-eval would normalise them, pertpipe's predictions
    are log1p) or outside log1p's range. The gene order is checked before (:func:`check_predictions`)."""
    from pertpipe.data.genes import load_universe

    dest = Path(dest)
    genes = load_universe(genes_file)
    with H5adReader(pred) as r:
        names = [str(g) for g in r.var_names]
        if names != genes:
            raise ContractError(pred, "var_names", "genes differ from the gene list (names or order)",
                                f"write genes in the order of {genes_file}")
        labels = r.obs["target_gene"].to_numpy()
        obs = pd.DataFrame({"target_gene": labels}, index=np.arange(r.n_obs).astype(str))
        has_decimals, vmax = False, 0.0
        chunk_size = max(1, min(chunk_size, STREAM_ENTRIES // max(r.n_vars, 1)))
        with work_dir(dest.parent) as tmp:
            h5 = Path(tmp) / "pred.h5ad"
            with H5adWriter(h5, obs=obs, var=pd.DataFrame(index=pd.Index(genes)), dtype=np.float32) as w:
                for start, _stop, block in r.iter_chunks(chunk_size):
                    block = block.astype(np.float32)
                    block.eliminate_zeros()
                    if block.nnz:
                        has_decimals |= bool(np.any(np.modf(block.data)[0] > 1e-3))
                        vmax = max(vmax, float(block.data.max()))
                        if block.data.min() < 0:
                            raise ContractError(pred, "X", f"negative values near row {start}",
                                                "predictions are log1p, >= 0")
                    w.append(block)
            if not has_decimals or vmax >= 15.0:
                raise ContractError(pred, "X", "values are all integers (counts)" if not has_decimals else
                                    f"max value {vmax:.2f} is beyond log1p's range (< 15)",
                                    "predictions are log1p-normalised expression")
            subprocess.run(["zstd", "-T0", "-q", "-f", "--rm", str(h5)], check=True, **child_options())
            (Path(tmp) / "watermark.txt").write_text("vcc-prep")
            subprocess.run(["tar", "-cf", str(dest), "-C", str(tmp), "pred.h5ad.zst", "watermark.txt"], check=True,
                           **child_options())


def inspect_vcc(path: str | os.PathLike) -> dict[str, Any]:
    """Open a ``.vcc`` archive: it must hold ``pred.h5ad.zst`` and ``watermark.txt`` ('vcc-prep')."""
    import anndata as ad

    try:
        with tarfile.open(path) as tf:
            members = sorted(tf.getnames())
            if members != ["pred.h5ad.zst", "watermark.txt"]:
                raise CellEvalError(f"{path}: unexpected archive members {members}")
            watermark = tf.extractfile("watermark.txt").read().decode()  # type: ignore[union-attr]
            with tempfile.TemporaryDirectory() as tmp:
                tf.extract("pred.h5ad.zst", tmp, filter="data")
                zst = Path(tmp) / "pred.h5ad.zst"
                subprocess.run(["zstd", "-d", "-q", "-f", str(zst)], check=True)
                a = ad.read_h5ad(Path(tmp) / "pred.h5ad", backed="r")
                shape, cols = list(a.shape), list(a.obs.columns)
                a.file.close()
    except (tarfile.TarError, subprocess.CalledProcessError) as exc:
        raise CellEvalError(f"{path}: not a readable .vcc archive ({exc})") from exc
    if watermark != "vcc-prep":
        raise CellEvalError(f"{path}: watermark is '{watermark}', expected 'vcc-prep'")
    return {"members": members, "watermark": watermark, "pred_shape": shape, "pred_obs": cols}


def _stored_entries(path: str | os.PathLike) -> int:
    """Matrix entries a reader of ``path`` holds: cells x genes for a dense file, the non-zeros of a sparse one."""
    with H5adReader(path) as r:
        return r.n_obs * r.n_vars if r.encoding() == "array" else int(r.nnz())


def run(pred: str | os.PathLike, truth: str | os.PathLike, outdir: str | os.PathLike, *, profile: str = "vcc",
        threads: int = 1, log_file: str | os.PathLike | None = None, engine: str = "cell-eval",
        local_above_entries: int = RUN_LOCAL_ENTRIES) -> dict[str, Any]:
    """``cell-eval run`` (or the local engine) of one prediction file: :func:`run_many` of one item."""
    return run_many([(str(pred), pred, truth, outdir)], profile=profile, threads=threads, log_file=log_file,
                    engine=engine, local_above_entries=local_above_entries)[0]


def run_many(items: list[tuple[str, str | os.PathLike, str | os.PathLike, str | os.PathLike]], *,
             profile: str = "vcc", threads: int = 1, log_file: str | os.PathLike | None = None,
             engine: str = "cell-eval", local_above_entries: int = RUN_LOCAL_ENTRIES) -> list[dict[str, Any]]:
    """``cell-eval run`` (or the local engine, :func:`run_local`) of ``items`` = [(label, predictions, truth,
    outdir)], each into a temporary folder whose four files are then moved into its ``outdir``. The cell-eval runs
    share one process (:mod:`tool_batch`: the same command line, imported once). Returns per item ``{"files":
    {name: path}, "engine": ..., "pred_entries": ..., "wall_s": ...}`` (``wall_s``: the batch's time over its items).

    ``engine``: ``cell-eval``; ``local`` (the vcc profile's metrics and pdex's DE tables from the local scorer,
    streamed); ``auto``: cell-eval up to ``local_above_entries`` stored entries of the predictions, local
    above (``cell-eval run`` holds both files and their polars copies, ~15 bytes a predicted entry: 17.1 GB at
    VCC size)."""
    if engine not in RUN_ENGINES:
        raise PertpipeError(f"evaluation.run_engine '{engine}': use one of {RUN_ENGINES}")
    if engine == "local" and profile != "vcc":
        raise PertpipeError(f"evaluation.run_engine 'local' computes the vcc profile's metrics only, and "
                            f"evaluation.profile is '{profile}': set evaluation.profile: vcc or "
                            "evaluation.run_engine: cell-eval")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        plans, calls = [], []
        for label, pred, truth, outdir in items:
            entries = _stored_entries(pred)
            eng = engine
            if eng == "auto":
                eng = "local" if profile == "vcc" and entries > local_above_entries else "cell-eval"
            tmp = stack.enter_context(work_dir(outdir))
            if eng == "local":
                run_local(pred, truth, tmp)
            else:
                calls.append((label, ["run", "-ap", str(pred), "-ar", str(truth), "-o", str(tmp), "--profile",
                                      profile, "--num-threads", str(threads), "--control-pert", CONTROL_LABEL,
                                      "--pert-col", "target_gene"]))
            plans.append((Path(tmp), Path(outdir), eng, entries))
        _batch(calls, "run", log_file)
        for tmp, _outdir, _eng, _n in plans:
            missing = [name for name in RUN_FILES if not (tmp / name).exists()]
            if missing:
                raise CellEvalError(f"cell-eval run wrote no {missing[0]} (in {tmp})")
        wall = round((time.perf_counter() - t0) / max(len(items), 1), 3)
        out = []
        for tmp, outdir, eng, entries in plans:
            files = {}
            for name in RUN_FILES:
                os.replace(tmp / name, outdir / name)
                files[name] = outdir / name
            out.append({"files": files, "engine": eng, "profile": profile, "pred_entries": entries,
                        "local_above_entries": local_above_entries, "wall_s": wall, "batch_rows": len(items)})
    return out


def run_local(pred: str | os.PathLike, truth: str | os.PathLike, outdir: str | os.PathLike) -> None:
    """What ``cell-eval run --profile vcc`` writes, from the local scorer (files read a group at a time):
    ``results.csv`` (overlap_at_N, mae, discrimination_score_l1 per perturbation), ``agg_results.csv`` (polars'
    ``describe`` of it, as cell-eval writes it) and pdex's ``real_de.csv`` / ``pred_de.csv``."""
    import polars as pl

    from pertpipe.evaluation.de import Expression, de_frame
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.scoring import ScoringContext

    real, pr = Expression.read(truth), Expression.read(pred)
    if not np.array_equal(real.genes, pr.genes):
        raise ContractError(pred, "var_names", f"gene order differs from the truth {truth}",
                            "predict again with the stage-1 genes.txt order")
    ctx = ScoringContext(real, pr)
    perts = ctx.perturbations
    by_col = {m.column: m for m in metrics(in_cell_eval=True)}
    table = pd.DataFrame({"perturbation": perts})
    for col in VCC_COLUMNS:
        values = by_col[col].local(ctx)
        table[col] = [float(values.get(p, by_col[col].missing)) for p in perts]
    out = Path(outdir)
    table.to_csv(out / "results.csv", index=False)
    pl.from_pandas(table.drop(columns="perturbation")).describe().write_csv(out / "agg_results.csv")
    for name, de, expr in (("real_de.csv", ctx.de_real, real), ("pred_de.csv", ctx.de_pred, pr)):
        de_frame(de, expr.genes).to_csv(out / name, index=False)


def build_baseline(train: str | os.PathLike, template: pd.DataFrame, dest: str | os.PathLike, *, seed: int,
                   chunk_size: int = DEFAULT_CHUNK, uns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cell-mean baseline the scaled scores are measured from: the ``cell_mean`` model's own predictions.

    It is fitted on ``train`` and written by the same writer, with the same ``seed``, as the predict rule writes
    ``cell_mean``'s: the same control draws and the same shift, so a ``cell_mean`` row is this file byte for byte
    (but for its provenance) and scores exactly 0, whatever engine or chunk size scores it. ``cell-eval baseline``
    writes every perturbed cell as the one constant mean profile instead; its pseudobulk is close to ours, but its
    cells have no spread, which moves DES and PDS (a constant-row baseline scored DES 0.195 where ``cell_mean``
    scored 0.022 on the tiny demo, and ``cell_mean`` came out 0.02 above it at VCC size).
    """
    from pertpipe.models import build_model
    from pertpipe.models.inputs import ModelInputs
    from pertpipe.models.predict import write_predictions

    model = build_model("cell_mean", {}, seed=seed)
    fit = model.fit(ModelInputs(train, chunk_size=chunk_size))
    info = write_predictions(model, template, train, dest, seed=seed, uns=uns, chunk_size=chunk_size)
    return {"baseline": "cell_mean (the model's predictions, same seed and control draws)",
            "baseline_cells": info["cells"], "targets": info["targets"], "train_targets": fit["train_targets"]}


def score(agg_user: str | os.PathLike, agg_base: str | os.PathLike, results: str | os.PathLike, *,
          log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """``cell-eval score`` against the baseline, returned as the score.json content (:func:`score_many` of one)."""
    return score_many([(str(agg_user), agg_user, agg_base, results)], log_file=log_file)[0]


def score_many(items: list[tuple[str, str | os.PathLike, str | os.PathLike, str | os.PathLike]], *,
               log_file: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """``cell-eval score`` of ``items`` = [(label, agg_results of the row, agg_results of the baseline, the row's
    results.csv)] in one process; per item the score.json content."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"score_{i}.csv" for i in range(len(items))]
        _batch([(label, ["score", "-i", str(agg_user), "-I", str(agg_base), "-o", str(out)])
                for (label, agg_user, agg_base, _r), out in zip(items, outs)], "score", log_file)
        return [_score_json(pd.read_csv(out).set_index("metric")["from_baseline"].to_dict(), agg_user, agg_base,
                            results) for (_l, agg_user, agg_base, results), out in zip(items, outs)]


def _score_json(scaled: dict[str, float], agg_user: str | os.PathLike, agg_base: str | os.PathLike,
                results: str | os.PathLike) -> dict[str, Any]:
    agg = pd.read_csv(agg_user).set_index("statistic")
    base = pd.read_csv(agg_base).set_index("statistic")
    per = pd.read_csv(results)
    return {
        "raw": {k: float(agg.loc["mean", m]) for k, m in _scored().items()},
        "baseline_raw": {k: float(base.loc["mean", m]) for k, m in _scored().items()},
        "scaled": {k: float(scaled[m]) for k, m in _scored().items()},
        "avg_score": float(scaled["avg_score"]),
        "n_perturbations": int(len(per)),
        "versions": versions(),
    }
