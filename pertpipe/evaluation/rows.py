"""Scoring a run's rows in batches: every scorer imported once per batch, the same per-row files as one job a row.

A *row* is one scored prediction file (a model, or ``<model>_raw``). Stage 3 splits a run's rows into batches
(``evaluation.rows_per_job``) and each batch is one job per scorer:

* :func:`celleval_rows`: per row, the prediction checks, ``cell-eval prep`` (the ``.vcc`` archive), ``cell-eval run``
  (or the local engine above its size) and the local scorer with its per-perturbation agreement with cell-eval;
  the cell-eval calls of the batch share one process (:mod:`pertpipe.evaluation.tool_batch`);
* :func:`score_rows`: ``cell-eval score`` of every row against the cell-mean baseline, in one process;
* :func:`vcc2026_rows`: per row, the predictions as counts and cell-eval2's ``vcc2026`` run and score.

Each writes exactly the files the per-row rules wrote (``stage3/<row>/...``), so the leaderboard and the report
read them as before; a test compares them with the scorers' own command lines run one row at a time.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pertpipe.io import atomic_path, read_json, write_json, write_text

Paths = list[str | os.PathLike]


def celleval_rows(rows: list[str], predictions: Paths, *, genes: str | os.PathLike, truth: str | os.PathLike,
                  template: str | os.PathLike | None, vcc: Paths, prep_json: Paths,
                  run_outputs: dict[str, Paths] | None, profile: str = "vcc", run_engine: str = "auto",
                  prep_engine: str = "auto", threads: int = 1, chunk_size: int = 10_000,
                  log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check, pack and (``run_outputs`` given: results, agg, pred_de, real_de, run_info, local_metrics,
    local_table, consistency — one path a row each) score ``rows``. Returns a short summary per row."""
    from pertpipe.data.genes import load_universe
    from pertpipe.evaluation import celleval

    universe = load_universe(genes)
    checks = [celleval.check_predictions(p, genes=universe, truth=truth, template=template) for p in predictions]
    preps = celleval.prep_many(list(zip(rows, predictions, vcc)), genes, log_file=log_file, engine=prep_engine,
                               chunk_size=chunk_size)
    for chk, info, dest in zip(checks, preps, prep_json):
        write_json({**chk, **info, "versions": celleval.versions()}, dest)
    summary: dict[str, Any] = {r: {"prep": p["engine"]} for r, p in zip(rows, preps)}
    if run_outputs is None:
        return summary
    outdirs = [Path(p).parent for p in run_outputs["results"]]
    runs = celleval.run_many([(r, p, truth, d) for r, p, d in zip(rows, predictions, outdirs)], profile=profile,
                             threads=threads, log_file=log_file, engine=run_engine)
    for i, (row, pred, run) in enumerate(zip(rows, predictions, runs)):
        files = run.pop("files")
        for name, key in (("results.csv", "results"), ("agg_results.csv", "agg"), ("pred_de.csv", "pred_de"),
                          ("real_de.csv", "real_de")):
            if Path(files[name]) != Path(run_outputs[key][i]):
                os.replace(files[name], run_outputs[key][i])
        write_json({**run, "versions": celleval.versions()}, run_outputs["run_info"][i])
        cons = local_metrics(pred, truth, run_outputs["results"][i], run["engine"],
                             metrics_out=run_outputs["local_metrics"][i], table_out=run_outputs["local_table"][i])
        write_json(cons, run_outputs["consistency"][i])
        summary[row].update(engine=run["engine"], max_abs_diff={k: v["max_abs_diff"] for k, v in
                                                                 cons["metrics"].items()})
    return summary


def local_metrics(pred: str | os.PathLike, truth: str | os.PathLike, celleval_results: str | os.PathLike,
                  engine: str, *, metrics_out: str | os.PathLike, table_out: str | os.PathLike) -> dict[str, Any]:
    """The local scorer on one row (``local_metrics.json``, ``local_results.csv``) and, where cell-eval ran, its
    agreement with cell-eval per perturbation and metric (returned: the ``consistency.json`` content)."""
    from pertpipe.evaluation import celleval
    from pertpipe.evaluation.report import consistency
    from pertpipe.evaluation.scoring import score_local

    t0 = time.perf_counter()
    table, agg = score_local(pred, truth)
    wall = round(time.perf_counter() - t0, 3)
    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, index=False)
    write_json({"mean": agg, "wall_s": wall, "n_perturbations": int(len(table)), "versions": celleval.versions()},
               metrics_out)
    if engine == "local":  # results.csv is the local scorer's own: nothing to compare
        cons = {"engine": engine, "metrics": {}, "note": "cell-eval run was not run (evaluation.run_engine chose "
                "the local engine for this size); agreement with cell-eval is measured where both run"}
    else:
        cons = {"engine": engine, **consistency(celleval_results, table)}
    return {**cons, "versions": celleval.versions()}


def score_rows(rows: list[str], aggs: Paths, results: Paths, baseline_agg: str | os.PathLike, scores: Paths, *,
               log_file: str | os.PathLike | None = None) -> dict[str, float]:
    """``cell-eval score`` of every row against the cell-mean baseline's aggregate -> each row's ``score.json``;
    returns avg_score per row."""
    from pertpipe.evaluation import celleval

    out = celleval.score_many([(r, a, baseline_agg, res) for r, a, res in zip(rows, aggs, results)],
                              log_file=log_file)
    for s, dest in zip(out, scores):
        write_json(s, dest)
    return {r: s["avg_score"] for r, s in zip(rows, out)}


def vcc2026_rows(rows: list[str], predictions: Paths, *, train: str | os.PathLike, bundle_info: str | os.PathLike,
                 bundle_files: str | os.PathLike, scores: Paths, aggs: Paths, metas: Paths, seed: int,
                 chunk_size: int = 10_000, log_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Per row: the predictions as counts (library sizes of matching training controls, the same draws for every
    row) and cell-eval2's vcc2026 run and score against the dataset's real bundle -> ``vcc2026.json`` (+ the run's
    aggregate and metadata); every cell-eval2 call of the batch in one process. A dataset the bundle step skipped
    (no counts) gets the skip note in every row."""
    from pertpipe.evaluation import vcc2026

    info = read_json(bundle_info)
    if "skipped" in info:
        for s, a, m in zip(scores, aggs, metas):
            write_text("", a)
            write_text("{}", m)
            write_json({"profile": "vcc2026", "skipped": info["skipped"]}, s)
        return {r: None for r in rows}
    files = Path(bundle_files)
    with tempfile.TemporaryDirectory(dir=Path(scores[0]).parent.parent) as tmp:
        counts, items = [], []
        for i, (row, pred) in enumerate(zip(rows, predictions)):
            dest = Path(tmp) / f"pred_counts_{i}.h5ad"
            counts.append(vcc2026.to_counts(pred, train, dest, seed=seed, chunk_size=chunk_size))
            items.append((row, dest, aggs[i], metas[i]))
        results = vcc2026.score_many(items, files / "real_counts.h5ad", files / "bundle", log_file=log_file)
    for s, res, c in zip(scores, results, counts):
        write_json({**res, "counts": c}, s)
    return {r: res["avg_score"] for r, res in zip(rows, results)}
