"""Stage 1 ``standardize``: one chunked pass from a source h5ad to the canonical contract (source genes).

Scale detection: ``auto`` takes integer-valued, non-negative X (or a ``counts`` layer) as raw counts and
normalises them (library size to ``target_sum``, then log1p), keeping the counts in ``layers["counts"]``;
non-integer X whose maximum looks like log1p (at most ``LOG1P_MAX``) is kept as it is. ``counts`` /
``log1p`` force the reading and fail loudly when the data disagree.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.data.adapters import Adapter
from pertpipe.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

LOG1P_MAX = 20.0  # log1p(1e6) ~ 13.8: anything above this is not log1p of normalised counts
_SCALES = ("auto", "counts", "log1p")


@dataclass
class ScaleDecision:
    scale: str  # "counts" or "log1p"
    counts_source: str | None  # None, "X" or "layers/counts"


def is_integer_valued(block: sp.csr_matrix) -> bool:
    d = block.data
    return bool(d.size == 0 or np.all(np.equal(np.mod(d, 1), 0)))


def check_values(block: sp.csr_matrix, *, path: object, field: str, row_offset: int) -> None:
    """NaN, inf and negative values are errors, reported with the first offending row."""
    d = block.data
    bad = ~np.isfinite(d)
    if bad.any():
        row = row_offset + int(np.searchsorted(block.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ContractError(path, field, f"{int(bad.sum())} NaN/inf values (first in row {row})",
                            "remove or impute them in the source before running stage 1")
    neg = d < 0
    if neg.any():
        row = row_offset + int(np.searchsorted(block.indptr, np.flatnonzero(neg)[0], side="right") - 1)
        raise ContractError(path, field, f"{int(neg.sum())} negative values (first in row {row}, min {d.min():.4g}); "
                            "expected counts or log1p of normalised counts",
                            "supply non-negative data (scaled or centred matrices cannot be used)")


def decide_scale(reader: H5adReader, requested: str, *, sample_rows: int = 2000) -> ScaleDecision:
    """Decide whether the source holds counts or log1p, from a sample of rows (checked again per chunk)."""
    if requested not in _SCALES:
        raise ConfigError(f"stage1.input_scale is '{requested}'. Fix: use one of {list(_SCALES)}")
    sample = reader.read_rows(0, min(sample_rows, reader.n_obs))
    check_values(sample, path=reader.path, field="X", row_offset=0)
    x_int = is_integer_valued(sample)
    x_max = float(sample.data.max()) if sample.nnz else 0.0
    counts_layer = "counts" in reader.layers()
    if requested == "log1p":
        if x_int and x_max > LOG1P_MAX:
            raise ContractError(reader.path, "X", f"integer values up to {x_max:.0f}: these are counts, but "
                                "stage1.input_scale is 'log1p'", "set stage1.input_scale: counts (or auto)")
        if x_max > LOG1P_MAX:
            raise ContractError(reader.path, "X", f"values up to {x_max:.4g} do not look like log1p "
                                f"(expected <= {LOG1P_MAX})", "give log1p of normalised counts, or raw counts "
                                "with stage1.input_scale: counts")
        return ScaleDecision("log1p", "layers/counts" if counts_layer else None)
    if requested == "counts" or (requested == "auto" and x_int and (x_max > LOG1P_MAX or x_max >= 1)):
        if x_int:
            return ScaleDecision("counts", "X")
        if counts_layer:
            return ScaleDecision("log1p", "layers/counts") if requested == "auto" else ScaleDecision("counts",
                                                                                                   "layers/counts")
        raise ContractError(reader.path, "X", f"non-integer values (max {x_max:.4g}) but stage1.input_scale is "
                            "'counts'", "set stage1.input_scale: log1p (or auto), or point the adapter at raw counts")
    # auto, non-integer
    if x_max > LOG1P_MAX:
        raise ContractError(reader.path, "X", f"non-integer values up to {x_max:.4g}: neither raw counts nor log1p "
                            "of normalised counts", "supply raw counts or log1p(normalised counts)")
    return ScaleDecision("log1p", "layers/counts" if counts_layer else None)


def normalize_log1p(counts: sp.csr_matrix, target_sum: float) -> tuple[sp.csr_matrix, int]:
    """log1p(counts / library size * target_sum) per row; rows with no counts stay zero (count returned)."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    empty = int((totals == 0).sum())
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    out = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    out.data *= np.repeat(scale.astype(np.float32), np.diff(out.indptr))
    np.log1p(out.data, out=out.data)
    return out, empty


def _assign_from_guides(reader: H5adReader, adapter: Adapter, obs_all: pd.DataFrame) -> dict[str, Any]:
    """Write each cell's top-guide target into ``obs_all[adapter.pert_col]``; returns the assignment summary."""
    from pertpipe.data.guides import UNASSIGNED, assign_guides

    uns = reader.uns()
    for key in (adapter.guide_names, adapter.guide_targets):
        if key not in uns:
            raise ContractError(reader.path, f"uns['{key}']", f"missing (uns has {sorted(uns)})",
                                "give one guide name and one target per obsm guide column in uns, and name them "
                                "with adapter_options guide_names / guide_targets")
    res = assign_guides(reader.obsm(adapter.guide_obsm), uns[adapter.guide_names], uns[adapter.guide_targets],
                        min_umi=adapter.guide_min_umi, min_fraction=adapter.guide_min_fraction)
    obs_all[adapter.pert_col] = res.labels
    obs_all["top_guide"], obs_all["top_guide_umi"] = res.top_guide, res.top_umi
    summary = res.summary(min_umi=adapter.guide_min_umi, min_fraction=adapter.guide_min_fraction)
    summary["unassigned_label"] = UNASSIGNED
    return summary


def _keep_mask(src: object, obs_all: pd.DataFrame, obs_filter: dict[str, list[str]] | None) -> np.ndarray:
    keep = np.ones(len(obs_all), dtype=bool)
    for col, values in (obs_filter or {}).items():
        if col not in obs_all.columns:
            raise ContractError(src, f"obs['{col}']", "filter column missing",
                                f"fix `filter:` of this dataset (config `datasets:` block or resources/datasets.yaml;"
                                f" obs has {[str(c) for c in obs_all.columns][:20]})")
        keep &= obs_all[col].astype(str).isin(values).to_numpy()
    if not keep.any():
        seen = {c: sorted(obs_all[c].astype(str).unique())[:10] for c in (obs_filter or {})}
        raise ContractError(src, "obs", f"filter {obs_filter} keeps no cells (values present: {seen})",
                            "correct the filter values")
    return keep


def standardize(src: str | os.PathLike, dest: str | os.PathLike, *, adapter: Adapter,
                obs_filter: dict[str, list[str]] | None = None, input_scale: str = "auto",
                target_sum: float = 1e4, chunk_size: int = DEFAULT_CHUNK, duplicate_genes: str = "error",
                uns: dict[str, Any] | None = None, duplicate_cells: str = "error") -> dict[str, Any]:
    """Stream ``src`` into a canonical h5ad at ``dest`` (source gene order); returns summary figures.

    ``src`` is read in ``adapter.source_format`` (h5ad, or an R object via :mod:`pertpipe.data.sources`; L1000
    GCT/GCTX/cmapR sources via :mod:`pertpipe.data.l1000`, which writes z-score signatures, not log1p).
    """
    from pertpipe.data.l1000 import L1000_FORMATS, standardize_l1000
    from pertpipe.data.sources import as_h5ad

    if adapter.source_format in L1000_FORMATS:
        return standardize_l1000(src, dest, adapter=adapter, obs_filter=obs_filter, uns=uns)
    if duplicate_genes not in ("error", "first"):
        raise ConfigError(f"stage1.duplicate_genes is '{duplicate_genes}'. Fix: use 'error' or 'first'")
    if duplicate_cells not in ("error", "make_unique"):
        raise ConfigError(f"stage1.duplicate_cells is '{duplicate_cells}'. Fix: use 'error' or 'make_unique'")
    with as_h5ad(src, adapter.source_format, workdir=Path(dest).parent, object_name=adapter.rda_object) as h5:
        return _standardize_h5ad(h5, dest, adapter=adapter, obs_filter=obs_filter, input_scale=input_scale,
                                 target_sum=target_sum, chunk_size=chunk_size, duplicate_genes=duplicate_genes,
                                 uns=uns, shown_as=src, duplicate_cells=duplicate_cells)


def _standardize_h5ad(src: Path, dest: str | os.PathLike, *, adapter: Adapter, obs_filter, input_scale: str,
                      target_sum: float, chunk_size: int, duplicate_genes: str, uns: dict[str, Any] | None,
                      shown_as: str | os.PathLike, duplicate_cells: str = "error") -> dict[str, Any]:
    with H5adReader(src) as reader:
        if reader.n_obs == 0 or reader.n_vars == 0:
            raise ContractError(shown_as, "X", f"the file is empty ({reader.n_obs} cells x {reader.n_vars} genes)",
                                "give a file with cells and genes (was it written before the data were added?)")
        obs_all = reader.obs.copy()
        guides = _assign_from_guides(reader, adapter, obs_all) if adapter.guide_obsm else None
        keep = _keep_mask(shown_as, obs_all, obs_filter)
        excluded = 0
        if adapter.pert_col in obs_all.columns:
            bad = obs_all[adapter.pert_col].astype(str).isin(adapter.exclude_values).to_numpy() & keep
            excluded, keep = int(bad.sum()), keep & ~bad
            if not keep.any():
                raise ContractError(shown_as, f"obs['{adapter.pert_col}']", f"every cell is labelled one of "
                                    f"{list(adapter.exclude_values)}", "check the guide thresholds or the labels")
        obs = adapter.canonical_obs(obs_all[keep], path=shown_as, duplicate_cells=duplicate_cells)
        renamed = int(pd.Index(obs_all.index[keep].astype(str)).duplicated().sum())

        symbols = adapter.gene_symbols(reader.var, path=src)
        dup_mask = symbols.duplicated(keep="first")
        if dup_mask.any():
            dups = sorted(set(symbols[dup_mask]))
            if duplicate_genes == "error":
                raise ContractError(src, "var_names", f"{len(dups)} duplicate gene names (e.g. {dups[:5]})",
                                    "make them unique in the source, or set stage1.duplicate_genes: first "
                                    "to keep the first occurrence")
            log.warning("dropping %d duplicate gene columns (kept the first of each): %s", int(dup_mask.sum()),
                        dups[:10])
        col_keep = np.flatnonzero(~dup_mask)
        var = pd.DataFrame(index=pd.Index(symbols[col_keep], name=None))
        var["source_name"] = reader.var_names[col_keep].astype(str)

        decision = decide_scale(reader, input_scale)
        log.info("source %s: %d cells x %d genes, X=%s, scale=%s, counts from %s", src, reader.n_obs,
                 reader.n_vars, reader.encoding(), decision.scale, decision.counts_source)
        layers = {"counts": np.int32} if decision.counts_source else {}
        meta = dict(uns or {})
        meta.setdefault("pertpipe", {})["standardize"] = {"scale": decision.scale,
                                                          "counts_source": decision.counts_source,
                                                          "target_sum": target_sum}
        empty_cells, x_max = 0, 0.0
        counts_layer = "counts" if decision.counts_source == "layers/counts" else None
        with H5adWriter(dest, obs=obs, var=var, uns=meta, layers=layers, obsm=reader.carried_obsm(keep)) as writer:
            for start, _stop, block in reader.iter_chunks(chunk_size, rows=keep):
                check_values(block, path=src, field="X", row_offset=start)
                block = block[:, col_keep] if dup_mask.any() else block
                counts = None
                if decision.counts_source == "X":
                    if not is_integer_valued(block):
                        raise ContractError(src, "X", f"non-integer values in rows {start}.. although the first rows "
                                            "were counts", "check the source; set stage1.input_scale explicitly")
                    counts = block
                elif counts_layer:
                    counts = reader.read_rows(start, _stop, counts_layer)[np.flatnonzero(keep[start:_stop])]
                    counts = counts[:, col_keep] if dup_mask.any() else counts
                    check_values(counts, path=src, field="layers['counts']", row_offset=start)
                if decision.scale == "counts":
                    x, empty = normalize_log1p(counts, target_sum)
                    empty_cells += empty
                else:
                    x = block.astype(np.float32)
                    if x.nnz and x.data.max() > LOG1P_MAX:
                        raise ContractError(src, "X", f"values up to {x.data.max():.4g} in rows {start}.. do not "
                                            "look like log1p", "set stage1.input_scale: counts if these are counts")
                x.eliminate_zeros()
                x_max = max(x_max, float(x.data.max()) if x.nnz else 0.0)
                if counts is not None:
                    writer.append(x, counts=counts.astype(np.int32))
                else:
                    writer.append(x)
    n_ctrl = int((obs["target_gene"] == CONTROL_LABEL).sum())
    return {
        "source": str(shown_as), "guide_assignment": guides, "excluded_cells": excluded,
        "excluded_values": list(adapter.exclude_values), "n_cells_source": int(len(keep)), "n_cells": int(keep.sum()), "n_genes": int(len(var)),
        "duplicate_genes_dropped": int(dup_mask.sum()), "duplicate_cells_renamed": renamed,
        "scale_detected": decision.scale,
        "counts_layer": decision.counts_source is not None, "empty_cells": empty_cells, "x_max": x_max,
        "n_control_cells": n_ctrl, "n_perturbations": int(obs["target_gene"].nunique() - 1),
        "filter": obs_filter or {},
    }
