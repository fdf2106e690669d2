"""The canonical AnnData contract, checked in one place (chunked, so it also runs on large files).

Contract (DESIGN.md): obs ``target_gene``/``batch``/``cell_type`` strings with ``non-targeting`` controls;
X log1p of normalised counts, float32 CSR, finite and non-negative (signature data, ``uns['pertpipe']
['standardize']['scale'] == 'zscore'``: z-scores, finite, within +-10, controls optional); ``layers["counts"]`` integer when
present; unique var names (in the universe's order after alignment, with ``var["in_source"]``);
``uns["pertpipe"]`` provenance.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, read_uns
from pertpipe.data.standardize import LOG1P_MAX, check_values
from pertpipe.errors import ContractError

REQUIRED_OBS = ("target_gene", "batch", "cell_type")


def validate_h5ad(path: str | os.PathLike, *, universe: list[str] | None = None, aligned: bool = True,
                  require_controls: bool = True, chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Check ``path`` against the contract; raise :class:`ContractError` on the first violation.

    Returns the figures the stage-1 report shows: shape, dtype, value range, log1p check, gene order.
    """
    from pertpipe.data.contracts import contract_of_file
    from pertpipe.data.l1000 import ZSCORE_CLIP

    contract = contract_of_file(path)  # cells (log1p) or signatures (z-scores), from the file's provenance
    zscore = contract.value_kind == "zscore"
    require_controls = require_controls and contract.require_controls
    with H5adReader(path) as r:
        for col in contract.obs:
            if col not in r.obs.columns:
                raise ContractError(path, f"obs['{col}']", "column missing", "run the file through stage 1 "
                                    "(standardize), or add the column")
            if r.obs[col].isna().any():
                raise ContractError(path, f"obs['{col}']", "missing values", "fill them")
        if require_controls and not (r.obs["target_gene"].astype(str) == CONTROL_LABEL).any():
            raise ContractError(path, "obs['target_gene']", f"no '{CONTROL_LABEL}' control cells",
                                "controls must be labelled exactly 'non-targeting'")
        names = [str(g) for g in r.var_names]
        if len(set(names)) != len(names):
            raise ContractError(path, "var_names", "duplicate gene names", "make var_names unique")
        order_match = None
        if universe is not None:
            same = sum(a == b for a, b in zip(names, universe))
            order_match = same / max(1, len(universe))
            if len(names) != len(universe) or same != len(universe):
                raise ContractError(path, "var_names", f"gene order matches the universe at {same}/{len(universe)} "
                                    f"positions ({len(names)} genes in file)", "re-run align_genes on this file")
        if aligned and "in_source" not in r.var.columns:
            raise ContractError(path, "var['in_source']", "column missing", "re-run align_genes")
        enc, dtype = r.encoding(), r.dtype()
        if enc != "csr_matrix" or dtype != np.float32:
            raise ContractError(path, "X", f"stored as {enc} {dtype}", "X must be float32 CSR (stage 1 writes it so)")
        x_min, x_max, nnz = np.inf, -np.inf, 0
        for start, _stop, block in r.iter_chunks(chunk_size):
            if zscore:
                if block.nnz and not np.isfinite(block.data).all():
                    raise ContractError(path, "X", f"NaN/inf z-scores near row {start}", "re-run standardize")
            else:
                check_values(block, path=path, field="X", row_offset=start)
            if block.nnz:
                x_min, x_max = min(x_min, float(block.data.min())), max(x_max, float(block.data.max()))
            nnz += block.nnz
        if zscore and max(abs(x_min), abs(x_max)) > ZSCORE_CLIP + 1e-4 if nnz else False:
            raise ContractError(path, "X", f"z-scores in [{x_min:.4g}, {x_max:.4g}] exceed +-{ZSCORE_CLIP:g}",
                                "re-run standardize (it clips signatures)")
        if not zscore and x_max > LOG1P_MAX:
            raise ContractError(path, "X", f"max value {x_max:.4g} is not log1p-like (<= {LOG1P_MAX})",
                                "X must be log1p of normalised counts")
        counts_ok = None
        if "counts" in r.layers():
            counts_ok = True
            for start, _stop, block in r.iter_chunks(chunk_size, layer="counts"):
                if block.nnz and (np.any(block.data < 0) or np.any(np.mod(block.data, 1) != 0)):
                    raise ContractError(path, "layers['counts']", f"non-integer or negative counts near row {start}",
                                        "layers['counts'] must hold raw integer counts")
        shape = (r.n_obs, r.n_vars)
        n_ctrl = int((r.obs["target_gene"].astype(str) == CONTROL_LABEL).sum())
    if "pertpipe" not in read_uns(path):
        raise ContractError(path, "uns['pertpipe']", "provenance missing", "write files through pertpipe's stage 1")
    return {
        "shape": list(shape), "x_dtype": str(dtype), "x_encoding": enc, "nnz": nnz,
        "x_min": 0.0 if nnz == 0 else min(0.0, x_min), "x_max": 0.0 if nnz == 0 else x_max,
        "log1p_check": (f"not log1p: z-scores within +-{ZSCORE_CLIP:g}" if zscore else
                        f"ok: finite, >= 0, max {0.0 if nnz == 0 else x_max:.3f} <= {LOG1P_MAX}"),
        "counts_layer": counts_ok, "gene_order_match": order_match, "n_control_cells": n_ctrl,
    }
