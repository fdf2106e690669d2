"""The stage-1 review report: what a person reads before trusting the data (JSON + plain text)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import DEFAULT_CHUNK, read_obs
from pertpipe.data.genes import load_universe
from pertpipe.data.split import check_no_leakage
from pertpipe.data.validate import validate_h5ad
from pertpipe.errors import LeakageError
from pertpipe.io import read_json, sha256_file


def stage1_report(*, dataset: str, standardize_json: str | os.PathLike, align_json: str | os.PathLike,
                  split_json: str | os.PathLike, train: str | os.PathLike, val: str | os.PathLike,
                  truth: str | os.PathLike, genes: str | os.PathLike, artifacts: dict[str, str],
                  chunk_size: int = DEFAULT_CHUNK, zscores_json: str | os.PathLike | None = None) -> dict[str, Any]:
    """Collect the checks and figures of stage 1 into one dict (see :func:`render_text`)."""
    import numpy as np

    universe = load_universe(genes)
    files = {name: validate_h5ad(p, universe=universe, chunk_size=chunk_size)
             for name, p in (("train", train), ("val", val), ("truth", truth))}
    tr, va = read_obs(train), read_obs(val)
    split = read_json(split_json)
    try:
        check_no_leakage(tr, va, heldout_genes=split.get("heldout_genes", []),
                         by_cell_type=split.get("strategy") == "cell_line_holdout")
        leakage = "none"
    except LeakageError as exc:  # reported, and the rule fails on it below
        leakage = str(exc)
    tr_t = set(tr["target_gene"].astype(str)) - {CONTROL_LABEL}
    va_t = set(va["target_gene"].astype(str)) - {CONTROL_LABEL}
    overlap = sorted(tr_t & va_t) if split.get("strategy") != "cell_line_holdout" else sorted(
        set(zip(tr["target_gene"], tr["cell_type"])) & set(zip(va["target_gene"], va["cell_type"])) - {
            (CONTROL_LABEL, c) for c in set(va["cell_type"])})
    counts = pd.concat([tr.assign(split="train"), va.assign(split="val")])
    per_target = (counts.groupby(["target_gene", "split"], observed=True).size().unstack(fill_value=0)
                  .reindex(columns=["train", "val"], fill_value=0))
    align = read_json(align_json)
    std = read_json(standardize_json)
    zscore_data = std.get("scale_detected") == "zscore"
    if zscore_data:  # signatures: z-scores are signed; the check is that they are finite and clipped
        values_ok = all(np.isfinite([f["x_min"], f["x_max"]]).all() and max(abs(f["x_min"]), abs(f["x_max"])) <= 10.0
                        for f in files.values())
    else:
        values_ok = all(f["log1p_check"].startswith("ok") for f in files.values())
    return {
        "dataset": dataset,
        "value_kind": "zscore" if zscore_data else "log1p",
        "standardize": std,
        "zscores": read_json(zscores_json) if zscores_json else None,
        "alignment": align,
        "split": {k: v for k, v in split.items() if k != "template"},
        "files": files,
        "checks": {
            "gene_order_match": min(f["gene_order_match"] for f in files.values()),
            "train_val_target_overlap": len(overlap),
            "train_val_overlap_units": [list(x) if isinstance(x, tuple) else x for x in overlap][:20],
            "leakage": leakage,
            "log1p": values_ok,
        },
        "cells_per_target": {t: {"train": int(r["train"]), "val": int(r["val"])} for t, r in per_target.iterrows()},
        "sha256": {name: sha256_file(p) for name, p in sorted(artifacts.items())},
    }


def check_report(rep: dict[str, Any], *, split_path: str | os.PathLike, train_path: str | os.PathLike) -> None:
    """The stage-1 gate: leakage or a gene order other than the universe's fails the stage (the report is not
    written, so nothing downstream runs on such data)."""
    from pertpipe.errors import ContractError

    c = rep["checks"]
    if c["leakage"] != "none" or c["train_val_target_overlap"]:
        raise LeakageError(f"{split_path}: {c['leakage'] if c['leakage'] != 'none' else c['train_val_overlap_units']}")
    if c["gene_order_match"] != 1.0:
        raise ContractError(train_path, "var_names", "gene order differs from the universe", "re-run align_genes")


def render_text(rep: dict[str, Any]) -> str:
    """The plain-text review of :func:`stage1_report`."""
    s, a, sp_, c = rep["standardize"], rep["alignment"], rep["split"], rep["checks"]
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    lines = [
        f"pertpipe stage 1 report: {rep['dataset']}",
        "=" * 60,
        "",
        "Checks",
        f"  [{ok(c['gene_order_match'] == 1.0)}] gene order matches the universe: {c['gene_order_match']:.2%}",
        f"  [{ok(c['train_val_target_overlap'] == 0)}] held-out perturbations in train: {c['train_val_target_overlap']}",
        f"  [{ok(c['leakage'] == 'none')}] leakage check: {c['leakage']}",
        f"  [{ok(c['log1p'])}] " + ("X holds z-scores, finite and within +-10, in train, val and truth"
                                     if rep.get("value_kind") == "zscore" else
                                     "X is log1p-like, finite and non-negative in train, val and truth"),
        "",
        "Standardize",
        f"  source: {s['source']}",
        f"  cells: {s['n_cells']:,} (of {s['n_cells_source']:,} in the source; filter {s['filter'] or 'none'})",
        f"  genes: {s['n_genes']:,}; duplicates dropped: {s['duplicate_genes_dropped']}; duplicated cell barcodes "
        f"renamed: {s.get('duplicate_cells_renamed', 0)}",
        f"  input scale: {s['scale_detected']}; counts layer kept: {s['counts_layer']}; empty cells: {s['empty_cells']}",
        f"  perturbations: {s['n_perturbations']}; control cells: {s['n_control_cells']:,}",
        *_guide_lines(s.get("guide_assignment")),
        *([f"  cells dropped for their label ({', '.join(s['excluded_values'])}): {s['excluded_cells']:,}"]
          if s.get("excluded_cells") else []),
        "",
        "Gene alignment",
        f"  universe: {a['universe_size']:,} genes ({a.get('universe_kind')}: {a.get('universe_file')}); "
        f"source: {a['source_genes']:,} genes",
        *([f"  note: {a['universe_note']}"] if a.get("universe_note") else []),
        f"  matched: {a['matched']:,}; rescued by alias: {a['rescued_by_alias']}; filled with zeros: "
        f"{a['filled_with_zeros']:,}; dropped: {a['dropped']:,}",
    ]
    for alias, sym in list(a["rescued_pairs"].items())[:20]:
        lines.append(f"    alias {alias} -> {sym}")
    if a["dropped_genes"]:
        lines.append(f"  dropped (first): {', '.join(a['dropped_genes'][:15])}")
    if a["target_genes_not_in_universe"]:
        lines.append(f"  targets not in the universe: {', '.join(a['target_genes_not_in_universe'][:15])}")
    lines += [
        "",
        f"Split ({sp_['strategy']}, seed {sp_['seed']})",
        f"  validation perturbations: {len(sp_['val_targets'])}; held-out genes: {len(sp_.get('heldout_genes', []))}",
        f"  cells: train {sp_['n_cells']['train']:,}, val {sp_['n_cells']['val']:,}, dropped {sp_['n_cells']['drop']:,}",
        f"  controls: train {sp_['n_controls']['train']:,}, val {sp_['n_controls']['val']:,}",
    ]
    if sp_.get("submission"):
        n_req = sp_.get("n_cells_requested") or {}
        lines.append(f"  SUBMISSION: {len(n_req)} target(s) to predict ({sum(n_req.values()):,} cells) have no cells "
                     "here; every perturbed cell trains, the truth holds controls only and nothing is scored "
                     "(each model ends with its cell-eval prep archive)")
    small = sp_.get("dropped_small_targets") or {}
    if small:
        lines.append(f"  DROPPED from validation (fewer than {sp_['params'].get('min_cells_per_target')} cells, "
                     f"too few for a DE test): {len(small)}: "
                     + ", ".join(f"{t} ({n})" for t, n in list(small.items())[:15]))
    cats: dict[str, list[str]] = {}
    for t, cat in sp_.get("categories", {}).items():
        cats.setdefault(cat, []).append(t)
    for cat, ts in sorted(cats.items()):
        lines.append(f"  {cat}: {len(ts)} ({', '.join(sorted(ts)[:8])}{' ...' if len(ts) > 8 else ''})")
    z = rep.get("zscores")
    if z:
        lines += ["", f"Per-context z-scores (zscores.h5ad; {'median/MAD' if z['robust'] else 'mean/sd'}, "
                      f"{z['value_kind']} data)",
                  f"  contexts: {z['contexts']}; (perturbation, context) groups: {z['groups']}; perturbations: "
                  f"{z['perturbations']}; median |z|: {z['median_abs_z']:.3g}"]
        for ctx, n in list(z["groups_per_context"].items())[:20]:
            lines.append(f"    {ctx:<20} groups {n:>5}, controls {z['controls_per_context'].get(ctx, 0):>7,}")
    lines += ["", "Files"]
    for name, f in rep["files"].items():
        lines.append(f"  {name}: {f['shape'][0]:,} x {f['shape'][1]:,} {f['x_dtype']} {f['x_encoding']}, "
                     f"X in [{f['x_min']:.3g}, {f['x_max']:.3g}], nnz {f['nnz']:,}, counts layer {f['counts_layer']}")
    lines += ["", "Cells per perturbation (train / val)"]
    for t, n in list(rep["cells_per_target"].items())[:60]:
        lines.append(f"  {t:<28} {n['train']:>7,} {n['val']:>7,}")
    if len(rep["cells_per_target"]) > 60:
        lines.append(f"  ... {len(rep['cells_per_target']) - 60} more in stage1_report.json")
    lines += ["", "sha256"]
    for name, h in rep["sha256"].items():
        lines.append(f"  {h}  {Path(name).name if '/' in name else name}")
    return "\n".join(lines) + "\n"


def _guide_lines(g: dict[str, Any] | None) -> list[str]:
    if not g:
        return []
    return [f"  cells assigned from gRNA counts: {g['assigned']:,} of {g['cells']:,}; unassigned and dropped: "
            f"{g['unassigned']:,} (top guide >= {g['min_umi']:g} UMI and >= {g['min_fraction']:.0%} of the cell's "
            f"guide UMI; {g['no_guide_umi']:,} cells had no guide UMI)"]
