"""Chunked pseudobulk means and the stage-1 ground truth (truth h5ad, pseudobulk parquet, gene order)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from pertpipe.core.groups import group_sums
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.io import atomic_path, write_text


def pseudobulk_means(path: str | os.PathLike, *, by: str = "target_gene", chunk_size: int = DEFAULT_CHUNK,
                     layer: str | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Mean of X per group of ``obs[by]`` ([groups x genes], float64) and the cells per group, chunk by chunk."""
    with H5adReader(path) as reader:
        g = group_sums(reader, reader.obs[by].astype(str).to_numpy(), chunk_size=chunk_size, layer=layer)
        names, n = g.names, g.n
        means = pd.DataFrame(g.sums / n[:, None], index=pd.Index(names, name=by), columns=list(reader.var_names))
    return means, pd.Series(n, index=means.index, name="n_cells")


def write_ground_truth(val_path: str | os.PathLike, *, truth_path: str | os.PathLike,
                       pseudobulk_path: str | os.PathLike, genes_path: str | os.PathLike,
                       chunk_size: int = DEFAULT_CHUNK, uns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Truth h5ad (X + target_gene/cell_type/batch), pseudobulk parquet and the gene-order file."""
    with H5adReader(val_path) as reader:
        obs = reader.obs[["target_gene", "cell_type", "batch"]].astype(str)
        var = reader.var[["in_source"]] if "in_source" in reader.var.columns else pd.DataFrame(index=reader.var_names)
        with H5adWriter(truth_path, obs=obs, var=var, uns=dict(uns or {})) as w:
            for _s, _e, block in reader.iter_chunks(chunk_size):
                w.append(block)
        genes = [str(g) for g in reader.var_names]
    means, n = pseudobulk_means(val_path, chunk_size=chunk_size)
    table = means.astype(np.float32)
    table.insert(0, "n_cells", n.astype(np.int64))
    table = table.reset_index()
    with atomic_path(pseudobulk_path) as tmp:
        table.to_parquet(tmp, index=False)
    write_text("\n".join(genes) + "\n", genes_path)
    return {"truth_cells": int(len(obs)), "pseudobulk_rows": int(len(table)), "genes": len(genes)}
