"""``pertpipe inspect FILE.h5ad``: what a new file holds and the config lines that bring it into the pipeline.

Reads obs/var eagerly (small) and streams X once for per-cell figures (UMIs, detected genes), so memory
follows the chunk. Column roles are guessed from names and values; the guess is printed as a ``datasets:``
block to paste, plus warnings where the data are too thin to rank models by a DE-based metric.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader
from pertpipe.data.adapters import Adapter
from pertpipe.data.standardize import LOG1P_MAX, is_integer_valued
from pertpipe.errors import ContractError

_PERT_NAMES = re.compile(r"(target|perturb|guide|grna|sgrna|condition|gene|knock|treatment|pert)", re.I)
_CT_NAMES = re.compile(r"(cell_?type|celltype|cell_?line|cell_id|cellline|tissue|context)", re.I)
_BATCH_NAMES = re.compile(r"(batch|gem|rep|library|lane|sample|plate|donor|replicate)", re.I)
_GUIDE_OBSM = re.compile(r"(grna|guide|sgrna|crispr)", re.I)
CONTROL_CANDIDATES = tuple(Adapter.control_values) + ("control", "NTC", "non-targeting", "safe-targeting",
                                                      "negative", "nt", "ctrl", "Control", "CTRL", "DMSO")
MIN_CONTROLS = 50  # fewer controls than this make the DE test of cell-eval (MWU vs controls) unreliable
MIN_CELLS_PER_TARGET = 20


def _control_values(values: pd.Series) -> list[str]:
    uniq = set(values.astype(str).unique())
    hits = [v for v in CONTROL_CANDIDATES if v in uniq]
    hits += sorted(u for u in uniq if re.match(r"^(nt|ntc|non.?target|neg|ctrl|control|safe)", u, re.I)
                   and u not in hits)
    return list(dict.fromkeys(hits))


def _column_by_name(obs: pd.DataFrame, pattern: re.Pattern, exclude: set) -> str | None:
    """The first obs column whose name matches ``pattern`` and that has few values (a grouping, not an id)."""
    for col in obs.columns:
        if col not in exclude and pattern.search(str(col)) and 1 <= obs[col].nunique() <= max(1, len(obs) // 10):
            return str(col)
    return None


def _guess_columns(obs: pd.DataFrame) -> dict[str, Any]:
    """Likely perturbation column (holds a control-like value, or is named like one; ~tens of values), its
    control labels, and cell-type / batch columns by name."""
    pert, ctrl = None, []
    scored = []
    for col in obs.columns:
        k = obs[col].nunique()
        if k < 2 or k > max(2, len(obs) // 2):
            continue
        cv = _control_values(obs[col])
        scored.append((bool(cv), bool(_PERT_NAMES.search(str(col))), -abs(k - 30), col, cv))
    if scored:
        best = max(scored, key=lambda s: s[:3])
        if best[0] or best[1]:
            pert, ctrl = best[3], best[4]
    ct = _column_by_name(obs, _CT_NAMES, {pert})
    batch = _column_by_name(obs, _BATCH_NAMES, {pert, ct})
    return {"pert_col": pert, "control_values": ctrl, "cell_type_col": ct, "batch_col": batch}


def _cell_figures(reader: H5adReader, chunk_size: int) -> dict[str, Any]:
    layer = "counts" if "counts" in reader.layers() else None
    totals, detected = [], []
    sample = None
    for _s, _e, block in reader.iter_chunks(chunk_size, layer=layer):
        sample = block if sample is None else sample
        totals.append(np.asarray(block.sum(axis=1)).ravel())
        detected.append(np.diff(block.indptr))
    tot = np.concatenate(totals) if totals else np.zeros(0)
    det = np.concatenate(detected) if detected else np.zeros(0)
    x_int = sample is not None and is_integer_valued(sample)
    x_max = float(sample.data.max()) if sample is not None and sample.nnz else 0.0
    bad = sample is not None and sample.nnz and (not np.isfinite(sample.data).all() or sample.data.min() < 0)
    scale = ("invalid (negative or non-finite values)" if bad else "counts" if x_int and x_max >= 1
             else "log1p" if x_max <= LOG1P_MAX else "unknown (not counts, not log1p)")
    q = lambda a: {k: float(np.quantile(a[np.isfinite(a)], p)) if np.isfinite(a).any() else 0.0  # noqa: E731
                   for k, p in (("min", 0), ("q25", .25), ("median", .5), ("q75", .75), ("max", 1))}
    n_cells, n_genes = reader.n_obs, reader.n_vars
    return {"matrix": "layers['counts']" if layer else "X", "scale": scale,
            "nonzero_fraction": float(det.sum() / max(1, n_cells * n_genes)),
            "umis_per_cell" if scale == "counts" else "sum_per_cell": q(tot), "detected_genes_per_cell": q(det)}


def inspect_h5ad(path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """Figures and guesses for ``path`` (see the module docstring); :func:`render_inspect` prints them."""
    path = Path(path)
    if not path.exists():
        raise ContractError(path, "file", "no such file", "check the path")
    with H5adReader(path) as r:
        if r.n_obs == 0:
            raise ContractError(path, "X", "the file is empty (0 cells)", "give a file with cells")
        obs = r.obs
        guess = _guess_columns(obs)
        guide_keys = [k for k in r.obsm_keys() if _GUIDE_OBSM.search(k)]
        figures = _cell_figures(r, chunk_size)
        data_warnings = _data_warnings(r, chunk_size)
        out: dict[str, Any] = {
            "file": str(path.resolve()), "n_cells": r.n_obs, "n_genes": r.n_vars, "x_encoding": r.encoding(),
            "layers": r.layers(), "obsm": r.obsm_keys(), "guide_obsm_candidates": guide_keys,
            "obs_columns": {str(c): int(obs[c].nunique()) for c in obs.columns}, **figures, "guess": guess,
        }
    # blocking: what stage 1 would refuse with the suggested config (the run stops); the rest are advice
    blocking = list(data_warnings)
    advice: list[str] = []
    all_control = _all_control_column(obs)
    named = "target_gene" if "target_gene" in obs.columns else None  # the canonical adapter's column
    if guess["pert_col"]:
        per = _per_target(obs, guess)
        blocking += per.pop("blocking")
        advice += per.pop("warnings")
        out.update(per)
    elif named or all_control:  # no usable label column: what standardize would say of the likely one
        adapter = (Adapter(pert_col=named) if named
                   else Adapter(pert_col=all_control[0], control_values=(all_control[1],)))
        blocking += [f"{f}: {p}. Fix: {x}" for f, p, x in adapter.obs_problems(obs)]
    elif guide_keys:
        blocking.append(f"no perturbation column; obsm['{guide_keys[0]}'] looks like gRNA counts: set "
                        "adapter_options.guide_obsm (and uns guide_names / guide_targets)")
    else:
        blocking.append("no column looks like a perturbation label (no control value found): set "
                        "adapter_options.pert_col and control_values by hand")
    out["blocking"] = blocking
    out["warnings"] = blocking + advice
    out["config"] = config_block(out)
    return out


def _data_warnings(reader: H5adReader, chunk_size: int) -> list[str]:
    """What ``standardize`` would refuse in X and var, in its words: NaN/inf or negative values, duplicated gene
    names."""
    from pertpipe.data.standardize import check_values

    warn = []
    layer = "counts" if "counts" in reader.layers() else None
    try:
        for start, _stop, block in reader.iter_chunks(chunk_size, layer=layer):
            check_values(block, path=reader.path, field=f"layers['{layer}']" if layer else "X", row_offset=start)
    except ContractError as exc:
        warn.append(str(exc))
    names = pd.Index(reader.var_names.astype(str))
    if names.duplicated().any():
        dups = sorted(set(names[names.duplicated()]))
        warn.append(f"{reader.path}: field 'var_names': {len(dups)} duplicate gene names (e.g. {dups[:5]}). Fix: make "
                    "them unique in the source, or set stage1.duplicate_genes: first to keep the first occurrence")
    return warn


def _all_control_column(obs: pd.DataFrame) -> tuple[str, str] | None:
    """(column, control label) of a column holding one control-like value only: a file without perturbed cells."""
    for col in obs.columns:
        vals = obs[col].astype(str).unique()
        if len(vals) == 1 and _control_values(obs[col]):
            return str(col), str(vals[0])
    return None


def _per_target(obs: pd.DataFrame, guess: dict[str, Any]) -> dict[str, Any]:
    adapter = Adapter(pert_col=guess["pert_col"], control_values=tuple(guess["control_values"]) or ("control",))
    raw = obs[guess["pert_col"]]
    blocking = [f"{field}: {problem}. Fix: {fix}" for field, problem, fix in adapter.obs_problems(obs)]
    warn: list[str] = []
    raw = raw[~(raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "None"]))].astype(str)
    labels = adapter.map_targets(raw[~raw.isin(adapter.exclude_values)])
    sizes = labels[labels != CONTROL_LABEL].value_counts()
    n_ctrl = int((labels == CONTROL_LABEL).sum())
    if n_ctrl < MIN_CONTROLS:
        warn.append(f"only {n_ctrl} control cells: the DE test behind DES/PDS needs many more (>= {MIN_CONTROLS}; "
                    "some go to validation) to rank models")
    small = sizes[sizes < MIN_CELLS_PER_TARGET]
    if len(small):
        warn.append(f"{len(small)} perturbation(s) have < {MIN_CELLS_PER_TARGET} cells (e.g. "
                    f"{', '.join(map(str, small.index[:5]))}): held out, they are dropped by the split "
                    "(stage1.split.min_cells_per_target)")
    if len(sizes) < 4:
        warn.append(f"{len(sizes)} perturbations: too few to hold some out and still train")
    return {"n_control_cells": n_ctrl, "n_perturbations": int(len(sizes)), "warnings": warn, "blocking": blocking,
            "cells_per_perturbation": {"min": int(sizes.min()) if len(sizes) else 0,
                                       "median": float(sizes.median()) if len(sizes) else 0.0,
                                       "max": int(sizes.max()) if len(sizes) else 0,
                                       "smallest": {str(k): int(v) for k, v in sizes.sort_values().head(5).items()}}}


def config_block(info: dict[str, Any], *, name: str | None = None) -> str:
    """The YAML lines to paste into a config file for this dataset."""
    g = info["guess"]
    name = name or re.sub(r"[^A-Za-z0-9_]+", "_", Path(info["file"]).name.rsplit(".", 1)[0]).strip("_") or "mydata"
    opts = []
    if g["pert_col"]:
        opts.append(f"pert_col: {g['pert_col']}")
        if g["control_values"]:
            opts.append("control_values: [" + ", ".join(f'"{v}"' for v in g["control_values"]) + "]")
    elif info["guide_obsm_candidates"]:
        opts.append(f"guide_obsm: {info['guide_obsm_candidates'][0]}")
    opts.append(f"cell_type_col: {g['cell_type_col'] or 'null'}")
    opts.append(f"batch_col: {g['batch_col'] or 'null'}")
    n_ct = info["obs_columns"].get(g["cell_type_col"], 1) if g["cell_type_col"] else 1
    strategy = "cell_line_holdout" if n_ct > 1 else "random_unseen"
    return "\n".join([
        f"dataset: {name}", "datasets:", f"  {name}:", f"    path: {info['file']}", "    adapter: canonical",
        "    adapter_options: {" + ", ".join(opts) + "}",
        "stage1:", "  universe: {kind: source}   # or vcc (the 18,080-gene VCC list)",
        f"  split: {{strategy: {strategy}, min_cells_per_target: {MIN_CELLS_PER_TARGET}}}",
        "# the baselines and the models; knowledge_ridge, dygenept and cfmvc need the knowledge stage (NCBI/GO files:",
        "# internet or `mirror:`)",
        "models: [control, cell_mean, celltype_mean, target_knockdown, additive, knowledge_ridge, linear, dygenept, "
        "cfmvc]",
    ]) + "\n"


def render_inspect(info: dict[str, Any]) -> str:
    lines = [f"{info['file']}: {info['n_cells']:,} cells x {info['n_genes']:,} genes ({info['x_encoding']})",
             f"  values ({info['matrix']}): {info['scale']}; non-zero: {info['nonzero_fraction']:.2%}"]
    for key in ("umis_per_cell", "sum_per_cell", "detected_genes_per_cell"):
        if key in info:
            q = info[key]
            lines.append(f"  {key.replace('_', ' ')}: median {q['median']:,.0f} (q25 {q['q25']:,.0f}, "
                         f"q75 {q['q75']:,.0f}, min {q['min']:,.0f}, max {q['max']:,.0f})")
    lines.append(f"  layers: {info['layers'] or 'none'}; obsm: {info['obsm'] or 'none'}")
    lines.append("obs columns (distinct values):")
    g = info["guess"]
    roles = {g["pert_col"]: "perturbation?", g["cell_type_col"]: "cell type?", g["batch_col"]: "batch?"}
    for col, k in info["obs_columns"].items():
        lines.append(f"  {col:<28} {k:>8,}  {roles.get(col, '')}")
    if g["pert_col"]:
        cp = info["cells_per_perturbation"]
        lines.append(f"perturbations: {info['n_perturbations']}; control cells ({', '.join(g['control_values'])}): "
                     f"{info['n_control_cells']:,}; cells per perturbation: min {cp['min']}, median "
                     f"{cp['median']:.0f}, max {cp['max']}")
    for w in info["warnings"]:
        lines.append(f"{'ERROR (the run would stop here)' if w in info.get('blocking', []) else 'WARNING'}: {w}")
    where = info.get("config_written_to")
    lines += ["", f"Config written to {where}" if where else "Paste into my_data.yaml:",
              f"then: snakemake --cores 2 --configfile {where or 'my_data.yaml'}", "", info["config"]]
    return "\n".join(lines)
