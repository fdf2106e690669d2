"""Evaluation of spatial imputation (SpatialBenchmarking, Li et al. 2022 Nat Methods) and communication recovery.

Per held-out gene, truth = the spot's measured log1p-normalised expression (counts per 10k over all genes), and
the metrics are the metric table's ``spatial`` entries (PCC, SSIM, RMSE, JS: :mod:`pertpipe.evaluation.spatial`).
Accuracy score (AS): per metric, methods ranked by their median (best -> 1, worst -> 0, linear), averaged over
the four metrics (higher is better; relative to the methods in the table).

k-fold: the LR genes that the spatial data measures and the scRNA-seq expresses are split into k folds; each
fold's genes are removed from the spatial input (``pipeline.prepare``), imputed by every method, and compared.
"""

from __future__ import annotations

import logging
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from pertpipe.evaluation.spatial import scaled
from pertpipe.spatial.methods import run_methods
from pertpipe.spatial.model import SpatialParams, columns, log_normalize, nearest
from pertpipe.spatial.prepare import Priors

log = logging.getLogger("pertpipe.spatial")

def spatial_metric_names() -> dict[str, bool]:
    """name -> higher is better, for the spatial task's metrics in the metric table."""
    from pertpipe.evaluation.metric_registry import metrics

    return {m.name: m.higher_is_better for m in metrics(task="spatial")}


def gene_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every spatial metric of the metric table on one gene's imputed vs measured vector."""
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.spatial import GeneColumns

    ctx = GeneColumns(np.asarray(pred)[:, None], np.asarray(truth)[:, None], ["g"])
    return {m.name: m.local(ctx)["g"] for m in metrics(task="spatial")}


def accuracy_scores(summary: pd.DataFrame) -> pd.Series:
    """AS per method from a (method x metric medians) frame."""
    parts = []
    for metric, higher in spatial_metric_names().items():
        r = summary[metric].rank(ascending=not higher, method="average")  # 1 = best
        n = len(summary)
        parts.append((n - r) / (n - 1) if n > 1 else r * 0 + 1.0)
    return sum(parts) / len(parts)


def eligible_genes(lr_genes: list[str], spatial: ad.AnnData, *, min_spots: int = 3) -> list[str]:
    """LR genes measured in the spatial data with a count in at least ``min_spots`` spots (a gene seen nowhere
    has no pattern to recover)."""
    col = {g: j for j, g in enumerate(spatial.var_names)}
    x = spatial.X
    out = []
    for g in lr_genes:
        if g in col:
            v = x[:, col[g]]
            n = int((v > 0).sum())
            if n >= min_spots:
                out.append(g)
    return out


def folds(genes: list[str], k: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(genes)))
    k = max(1, min(k, len(genes)))
    return [sorted(genes[i] for i in order[f::k]) for f in range(k)]


def _fold(args: tuple) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One fold, on one thread (the same arithmetic whether the folds run one after another or side by side)."""
    import torch

    spatial, scrna, lr_genes, held, priors, params, methods, tangram_epochs, gimvi_epochs = args
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_methods(spatial, scrna, lr_genes, held, priors, params, methods, heldout=held,
                           tangram_epochs=tangram_epochs, gimvi_epochs=gimvi_epochs)
    finally:
        torch.set_num_threads(before)


def run_folds(args: list[tuple], workers: int) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Every task through :func:`_fold`: in ``workers`` processes side by side (spawned, each with one BLAS and
    one torch thread), or in this process when ``workers`` is 0. Each task is seeded by itself and every worker
    computes on one thread, so the numbers do not depend on how many workers run (the pipeline always uses a pool:
    ``--cores 1`` and ``--cores 2`` give the same lrimpute and light-baseline numbers; Tangram's and gimVI's torch
    round differently from process to process, ~1e-6; in this process the BLAS may round differently too)."""
    if workers <= 0:
        return [_fold(a) for a in args]
    import multiprocessing
    import os
    import sys
    from concurrent.futures import ProcessPoolExecutor

    single = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {v: os.environ.get(v) for v in single}
    os.environ.update(single)  # the spawned workers inherit it before numpy loads
    # a spawned worker re-runs the parent's main script unless it has no file: a rule's script (whose top level is
    # the rule) must not run again there, and _fold needs nothing from it
    main = sys.modules.get("__main__")
    hidden = {a: main.__dict__.pop(a) for a in ("__file__",) if main is not None and a in main.__dict__}
    spec = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = None
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(args)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_fold, args))
    finally:
        if main is not None:
            main.__dict__.update(hidden)
            main.__spec__ = spec
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def method_groups(methods: list[str]) -> list[list[str]]:
    """The methods of one fold split into independent tasks: lrimpute, its ablations and the light baselines
    (sharing one validation and latent fit), then each peer on its own (they need neither), so two workers share
    the folds' work evenly. Every method seeds itself, so the split changes no number."""
    from pertpipe.spatial.baselines import PEERS

    ours = [m for m in methods if m not in PEERS]
    return [g for g in [ours] + [[m] for m in methods if m in PEERS] if g]


def kfold_evaluate(spatial: ad.AnnData, scrna: ad.AnnData, lr_genes: list[str], priors: Priors | None,
                   params: SpatialParams, methods: list[str], *, k: int = 5, max_genes: int | None = None,
                   tangram_epochs: int = 300, gimvi_epochs: int = 200, workers: int = 0) -> dict[str, Any]:
    """Per-gene metrics of every method over k folds of held-out LR genes (+ the held-out predictions); the folds
    run in ``workers`` processes side by side, or in this process with 0 (:func:`run_folds`)."""
    genes = eligible_genes(lr_genes, spatial)
    if max_genes and len(genes) > max_genes:
        rng = np.random.default_rng(params.seed)
        genes = sorted(rng.choice(genes, max_genes, replace=False).tolist())
    if not genes:
        from pertpipe.errors import ContractError

        raise ContractError("<spatial pair>", "lr_genes", "no LR gene is both measured in the spatial data and "
                            "expressed in the scRNA-seq, so nothing can be held out", "lower spatial.lr.min_mean / "
                            "min_fraction or use another LR resource")
    tcol = {g: j for j, g in enumerate(spatial.var_names)}
    truth = columns(log_normalize(spatial.X), [tcol[g] for g in genes])  # spots x held-out genes
    rows, preds = [], {m: np.zeros((spatial.n_obs, len(genes)), np.float32) for m in methods}
    gcol = {g: j for j, g in enumerate(genes)}
    unavailable: dict[str, str] = {}
    fold_list = folds(genes, k, params.seed)
    validation = []
    groups = method_groups(methods)
    tasks = [(g, f) for g in range(len(groups)) for f in range(len(fold_list))]  # the heaviest group first
    results = run_folds([(spatial, scrna, lr_genes, fold_list[f], priors, params, groups[g], tangram_epochs,
                          gimvi_epochs) for g, f in tasks], workers)
    per_fold: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = [({}, {}) for _ in fold_list]
    for (_, f), (o, i) in zip(tasks, results):
        per_fold[f][0].update(o)
        unavailable.update(i["unavailable"])
        if "validation" in i:
            per_fold[f][1].update(i)
    for f, (held, (out, info)) in enumerate(zip(fold_list, per_fold)):
        validation.append(info.get("validation", {}))
        for m, pred in out.items():
            for j, g in enumerate(held):
                preds[m][:, gcol[g]] = pred[:, j]
                rows.append({"method": m, "gene": g, "fold": f, **gene_metrics(pred[:, j], truth[:, gcol[g]])})
        log.info("fold %d/%d: %d held-out genes", f + 1, len(fold_list), len(held))
    per_gene = pd.DataFrame(rows)
    summary = per_gene.groupby("method")[list(spatial_metric_names())].median()
    summary["as"] = accuracy_scores(summary)
    return {"per_gene": per_gene, "summary": summary, "genes": genes, "folds": fold_list,
            "predictions": {m: p for m, p in preds.items() if m in out or m not in unavailable},
            "truth": truth, "unavailable": unavailable, "validation": validation}


def spatial_neighbors(coords: np.ndarray, k: int = 6) -> np.ndarray:
    """(i, j) edges: each spot to its ``k`` nearest other spots."""
    idx, _ = nearest(coords.astype(np.float64), coords.astype(np.float64), k + 1)
    src = np.repeat(np.arange(len(coords)), k)
    dst = idx[:, 1:k + 1].ravel()
    return np.stack([src, dst], 1)


def _pair_activity(expr: dict[str, np.ndarray], genes: list[str]) -> np.ndarray | None:
    """A complex's activity per spot: the minimum over its subunits (None if a subunit is missing)."""
    vals = [expr.get(g) for g in genes]
    if any(v is None for v in vals):
        return None
    return np.min(np.stack(vals, 1), 1)


def communication(pairs: list[dict[str, Any]], edges: np.ndarray, expr: dict[str, np.ndarray]) -> np.ndarray:
    """Score of each LR pair: mean over neighbouring spot pairs (i -> j) of ligand(i) x receptor(j), with every
    gene scaled to [0, 1] by its maximum (0 where a subunit is not available)."""
    unit = {g: scaled(np.asarray(v, np.float64)) for g, v in expr.items()}
    out = np.zeros(len(pairs))
    for p, pr in enumerate(pairs):
        lig = _pair_activity(unit, pr["ligand_genes"])
        rec = _pair_activity(unit, pr["receptor_genes"])
        if lig is not None and rec is not None:
            out[p] = float(np.mean(lig[edges[:, 0]] * rec[edges[:, 1]]))
    return out


def communication_recovery(pairs: list[dict[str, Any]], coords: np.ndarray, measured: dict[str, np.ndarray],
                           imputed: dict[str, np.ndarray], expected: dict[str, np.ndarray], *, k: int = 6,
                           top: int = 50) -> dict[str, Any]:
    """LR interaction scores of neighbouring spots before (measured genes only) and after imputation (measured
    where measured, imputed otherwise) against the scRNA-based expectation (the matched cells' cell-type means)."""
    from scipy.stats import spearmanr

    edges = spatial_neighbors(coords, k)
    before = communication(pairs, edges, measured)
    after = communication(pairs, edges, {**imputed, **measured})
    exp = communication(pairs, edges, expected)
    top = min(top, len(pairs))
    top_exp = set(np.argsort(-exp, kind="stable")[:top])

    def stats(s: np.ndarray) -> dict[str, float]:
        rho = spearmanr(s, exp).statistic if np.std(s) > 0 and np.std(exp) > 0 else 0.0
        top_s = set(np.argsort(-s, kind="stable")[:top])
        return {"n_pairs_scored": int((s > 0).sum()), "spearman_vs_expected": float(rho),
                f"top{top}_overlap": len(top_s & top_exp) / max(1, top)}

    table = pd.DataFrame({"ligand": [p["ligand"] for p in pairs], "receptor": [p["receptor"] for p in pairs],
                          "before": before, "after": after, "expected": exp})
    return {"n_pairs": len(pairs), "n_edges": int(len(edges)), "before": stats(before), "after": stats(after),
            "table": table}


def expected_expression(scrna_log: np.ndarray, cell_types: np.ndarray, genes_idx: dict[str, int],
                        fractions: np.ndarray, types: list[str]) -> dict[str, np.ndarray]:
    """Per spot: sum over cell types of (the spot's matched-cell fraction of the type x the type's mean)."""
    means = np.stack([np.asarray(scrna_log[cell_types == t].mean(0)).ravel() for t in types], 0)  # types x genes
    return {g: fractions @ means[:, j] for g, j in genes_idx.items()}
