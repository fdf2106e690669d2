"""The predict rule's work: a fitted model's predictions for the template, written as the task expects.

* cells (:func:`write_predictions`): for each template row, ``n_cells`` training control cells of the same cell type
  and batch are drawn (seeded per template row, so every model starts from the same cells) and the model's
  ``predict_cells`` turns them into predicted cells (validated shrinkage toward a baseline applied when the model
  has one);
* signatures (:func:`write_signature_predictions`): ``n_cells`` rows per template row, each the model's
  ``predict_signature`` of (target, cell type);
* labels (:func:`write_label_predictions`): per test (perturbation, line) row, the model's DE and direction scores
  for every readout gene (``X`` and ``layers["dir"]``);
* :func:`attention_table`: the facet attention of models that have it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adWriter
from pertpipe.errors import ContractError
from pertpipe.models.base import PREDICT_BLOCK_ENTRIES, PerturbationModel, require_task
from pertpipe.models.summary import ControlCells


def write_predictions(model: PerturbationModel, template: pd.DataFrame, train: str | os.PathLike,
                      dest: str | os.PathLike, *, seed: int | None = None, uns: dict[str, Any] | None = None,
                      chunk_size: int = DEFAULT_CHUNK, block_entries: int = PREDICT_BLOCK_ENTRIES) -> dict[str, Any]:
    """Cells for every template row: sampled training controls (same cell type and batch) + the model's shift.

    Rows are written as they are predicted; a row's cells are predicted ``block_entries // genes`` at a time where
    the model treats cells independently (:attr:`PerturbationModel.cells_independent`), so memory follows the
    block, not the largest perturbation. The control draw is made for the whole row first, so the file is the same
    whatever the block size.
    """
    t0 = time.perf_counter()
    seed = model.seed if seed is None else seed
    for col in ("target_gene", "cell_type", "batch", "n_cells"):
        if col not in template.columns:
            raise ContractError("template.csv", col, "column missing", "re-run ground_truth")
    controls = ControlCells.load(train, counts=model.uses_counts, spatial=model.uses_spatial, chunk_size=chunk_size)
    ctrl_obs, ctrl_x = controls.obs, controls.x
    genes = model.genes
    block_rows = max(1, int(block_entries) // max(1, len(genes)))
    by_ctb = {k: np.asarray(v) for k, v in ctrl_obs.groupby(["cell_type", "batch"]).indices.items()}
    by_ct = {k: np.asarray(v) for k, v in ctrl_obs.groupby("cell_type").indices.items()}
    rows = template.sort_values(["target_gene", "cell_type", "batch"]).reset_index(drop=True)
    obs_parts = []
    for r in rows.itertuples(index=False):
        obs_parts.append(pd.DataFrame({"target_gene": [r.target_gene] * int(r.n_cells),
                                       "cell_type": [r.cell_type] * int(r.n_cells),
                                       "batch": [r.batch] * int(r.n_cells)}))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = [f"pred{i}" for i in range(len(obs))]
    var = pd.DataFrame(index=pd.Index(genes))
    fallback = 0
    with H5adWriter(dest, obs=obs, var=var, uns=dict(uns or {}), dense=True) as w:  # predicted cells are dense
        for i, r in enumerate(rows.itertuples(index=False)):
            n = int(r.n_cells)
            # Each row's control draw has its own generator, so every model starts from the same control cells
            # (paired comparison) however many random numbers a generative model consumes; the model gets another.
            pick_rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
            rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
            pool = by_ctb.get((r.cell_type, r.batch))
            if pool is None or len(pool) == 0:
                pool = by_ct.get(r.cell_type)
                fallback += 1
            if pool is None or len(pool) == 0:
                pool = np.arange(ctrl_x.shape[0])
            pick = pick_rng.choice(pool, size=n, replace=len(pool) < n)
            control = r.target_gene == CONTROL_LABEL
            step = block_rows if (control or model.cells_independent) else max(n, 1)
            for s in range(0, n, step):
                part = pick[s:s + step]
                base = ctrl_x[part]
                if control:
                    w.append(base.astype(np.float32))
                    continue
                x = model.predict_cells(r.target_gene, r.cell_type, r.batch, controls, part, rng)
                if model.shrinkage is not None:
                    x = model.shrinkage.apply(np.asarray(x, dtype=np.float64), base.toarray().astype(np.float64),
                                              r.cell_type)
                w.append(np.asarray(x, dtype=np.float32))
    return {"cells": int(len(obs)), "targets": int(rows.loc[rows.target_gene != CONTROL_LABEL, "target_gene"].nunique()),
            "control_pool_fallbacks": fallback, "predict_s": round(time.perf_counter() - t0, 3),
            "block_cells": block_rows, "notes": dict(model.notes)}


def attention_table(model: PerturbationModel, template: pd.DataFrame, train: str | os.PathLike, *,
                    seed: int, n_cells: int = 64) -> pd.DataFrame:
    """Facet attention α per (held-out target, cell type), averaged over sampled control cells and heads.

    Empty (with its columns) for models without facet attention.
    """
    cols = ["target_gene", "cell_type", "facet", "weight"]
    if not hasattr(model, "attention"):
        return pd.DataFrame(columns=cols)
    controls = ControlCells.load(train)
    ctrl_obs, ctrl_x = controls.obs, controls.x
    rng = np.random.default_rng(seed)
    rows = []
    pairs = template.loc[template.target_gene != CONTROL_LABEL, ["target_gene", "cell_type"]].drop_duplicates()
    for t, ct in sorted(map(tuple, pairs.to_numpy())):
        pool = np.flatnonzero((ctrl_obs.cell_type == ct).to_numpy())
        if len(pool) == 0:
            pool = np.arange(ctrl_x.shape[0])
        pick = rng.choice(pool, size=min(n_cells, len(pool)), replace=False)
        a = model.attention(t, ctrl_x[pick].toarray().astype(np.float64))
        for name, w in zip(model.facet_names, a):
            rows.append((t, ct, name, float(w)))
    return pd.DataFrame(rows, columns=cols)


def write_signature_predictions(model: PerturbationModel, template: pd.DataFrame, dest: str | os.PathLike, *,
                                uns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Signature datasets (z-scores, no cells to start from): ``n_cells`` rows per template row, each the
    model's predicted signature of (target, cell type)."""
    t0 = time.perf_counter()
    require_task(model, "signatures", str(dest))
    rows = template.sort_values(["target_gene", "cell_type", "batch"]).reset_index(drop=True)
    rep = rows.loc[rows.index.repeat(rows["n_cells"].astype(int)), ["target_gene", "cell_type", "batch"]]
    obs = rep.reset_index(drop=True).astype(str)
    obs.index = [f"pred{i}" for i in range(len(obs))]
    cache: dict[tuple[str, str], np.ndarray] = {}
    with H5adWriter(dest, obs=obs, var=pd.DataFrame(index=pd.Index(model.genes)), uns=dict(uns or {}),
                    dense=True) as w:
        for r in rows.itertuples(index=False):
            key = (r.target_gene, r.cell_type)
            if key not in cache:
                cache[key] = np.asarray(model.predict_signature(*key), dtype=np.float32)
            w.append(sp.csr_matrix(np.repeat(cache[key][None, :], int(r.n_cells), axis=0)))
    return {"cells": int(len(obs)), "targets": int(rows["target_gene"].nunique()), "signatures": True,
            "predict_s": round(time.perf_counter() - t0, 3), "notes": dict(model.notes)}


def write_label_predictions(model: PerturbationModel, template: pd.DataFrame, dest: str | os.PathLike, *,
                            uns: dict[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Labels datasets: one row per template row (``row``, ``target_gene``, ``cell_type``), X = DE scores,
    ``layers["dir"]`` = direction scores, over the model's readout genes; and the label head's facet attention
    (models that have one), mean over heads."""
    import anndata as ad

    from pertpipe.io import atomic_path

    t0 = time.perf_counter()
    require_task(model, "labels", str(dest))
    perts, lines = template["target_gene"].astype(str).to_numpy(), template["cell_type"].astype(str).to_numpy()
    de, dr = model.predict_labels(perts, lines)
    obs = pd.DataFrame({"target_gene": perts, "cell_type": lines}, index=template["row"].astype(str).to_numpy())
    out = ad.AnnData(X=np.asarray(de, dtype=np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(model.genes)),
                     layers={"dir": np.asarray(dr, dtype=np.float32)}, uns=dict(uns or {}))
    with atomic_path(dest, suffix=".h5ad") as tmp:
        out.write_h5ad(tmp)
    cols = ["target_gene", "cell_type", "facet", "weight"]
    att = pd.DataFrame(columns=cols)
    learner = getattr(model, "labeler", None)
    if hasattr(learner, "attention") and len(perts):
        a = learner.attention(perts, lines).mean(1)  # [rows, facets]
        facets = list(getattr(getattr(learner, "kn", None), "facet_names", None) or
                      [f"facet{k}" for k in range(a.shape[1])])
        att = pd.DataFrame([(p, c, facets[k], float(a[i, k])) for i, (p, c) in enumerate(zip(perts, lines))
                            for k in range(a.shape[1])], columns=cols)
    return {"rows": int(len(obs)), "genes": len(model.genes), "labels": True,
            "predict_s": round(time.perf_counter() - t0, 3)}, att
