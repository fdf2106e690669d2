"""VCC-scale benchmark: the real rules on a synthetic screen with the Virtual Cell Challenge's shape.

A raw-count screen (``pertpipe.data.simulate.write_screen``: 221,000 cells x the VCC's 18,080 genes at full
size, ~4,500 detected genes and ~50k UMI per cell, 40,000 controls, 150 training + the VCC's 50 validation
targets, one cell line, cells in random order) is written chunk by chunk, then the pipeline runs on it as a
user's file (adapter ``vcc``) with the ``vcc`` split: standardize, align, split, ground truth, knowledge (its
embedding cache kept between runs), each model's training (a fixed small number of epochs), prediction of the
validation template, the cell-eval baseline, ``cell-eval prep`` / ``run`` / ``score`` and the local scorer
(prep and run by the engines ``evaluation.prep_engine`` / ``run_engine: auto`` pick for the size; ``engines``
in the output says which ran).

The validation template's cell counts are the VCC's (``pert_counts_Validation.csv``) times ``--scale``, so at
``--scale 1`` the prediction files are the challenge's size. Per rule it prints wall seconds and peak RSS from
Snakemake's benchmark files, training cells/s from each ``train_log.json``, the total wall time, and where two
scales are given the peak-RSS growth of every rule between them. One JSON document on stdout.

    python benchmarks/bench_scale.py --scales 0.5 1.0        # half and full VCC size (hours on 2 cores)
    python benchmarks/bench_scale.py --scales 0.0625 0.125 --models control cell_mean dygenept cfmvc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
FULL_CELLS, FULL_CONTROLS, N_TRAIN_TARGETS = 221_000, 40_000, 150
STREAMING = ("celleval_rows", "predict", "celleval_baseline", "standardize", "align_genes", "split", "ground_truth")


def make_screen(path: Path, scale: float, seed: int) -> dict:
    from pertpipe.data.simulate import ScreenParams, write_screen

    genes = [g.strip() for g in (SHARED / "vcc" / "gene_names.csv").read_text().splitlines() if g.strip()]
    val = pd.read_csv(SHARED / "vcc" / "pert_counts_Validation.csv")["target_gene"].astype(str).tolist()
    import numpy as np

    rng = np.random.default_rng(seed)
    others = [g for g in genes if g not in set(val)]
    train = sorted(rng.choice(others, size=N_TRAIN_TARGETS, replace=False).tolist())
    p = ScreenParams(n_cells=int(round(FULL_CELLS * scale)), n_controls=int(round(FULL_CONTROLS * scale)))
    t0 = time.perf_counter()
    out = write_screen(path, genes, train + val, seed=seed, params=p)
    return {**out, "write_s": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}


def config(wd: Path, screen: Path, scale: float, models: list[str], cache: Path, epochs: int,
           profile: str = "vcc2025") -> dict:
    vc = pd.read_csv(SHARED / "vcc" / "pert_counts_Validation.csv")
    vc["n_cells"] = (vc["n_cells"] * scale).round().clip(lower=1).astype(int)
    vc[["target_gene", "n_cells"]].to_csv(wd / "val_counts.csv", index=False)
    return {
        "dataset": "vcc_scale", "mirror": str(SHARED), "lock_file": None, "seed": 0,
        "datasets": {"vcc_scale": {"path": str(screen), "adapter": "vcc",
                                   "adapter_options": {"default_cell_type": "H1"}}},
        "stage1": {"chunk_size": 10_000, "universe": {"kind": "vcc"}, "keep_intermediates": False,
                   "split": {"strategy": "vcc", "val_counts": str(wd / "val_counts.csv"),
                             "control_val_fraction": 0.1}},
        "knowledge": {"cache_dir": str(cache)},
        "models": models,
        "model_params": {
            "linear": {"rank": 10, "ridge": 0.1},
            "dygenept": {"epochs": epochs, "steps_per_epoch": 10, "device": "cpu", "patience": 100},
            "cfmvc": {"vae_epochs": epochs, "flow_epochs": epochs, "steps_per_epoch": 10, "device": "cpu",
                      "patience": 100, "vae_batch": 256},
        },
        "evaluation": {"threads": 2, "profile": profile},
    }


def rule_figures(res: Path) -> dict:
    out = {}
    for tsv in sorted((res / "benchmarks").glob("*.tsv")):
        b = pd.read_csv(tsv, sep="\t")
        out[tsv.stem] = {"wall_s": round(float(b["s"].iloc[0]), 1), "max_rss_mb": round(float(b["max_rss"].iloc[0]), 1)}
    return out


def training_figures(res: Path, models: list[str]) -> dict:
    out = {}
    for m in models:
        log = res / "stage2" / m / "train_log.json"
        if log.exists():
            t = json.loads(log.read_text())
            out[m] = {"cells_per_s": t.get("cells_per_s"), "train_wall_s": t.get("train_wall_s"),
                      "cells_seen": t.get("cells_seen"), "wall_s": t.get("wall_s")}
    return out


def run_scale(root: Path, scale: float, models: list[str], cache: Path, epochs: int, keep: bool,
              profile: str = "vcc2025") -> dict:
    wd = root / f"scale_{scale:g}"
    wd.mkdir(parents=True, exist_ok=True)
    screen = wd / "vcc_scale.h5ad"
    gen = make_screen(screen, scale, seed=0)
    cfg = config(wd, screen, scale, models, cache, epochs, profile)
    t0 = time.perf_counter()
    proc = run_all(wd, cfg)
    wall = time.perf_counter() - t0
    res = wd / "results" / "vcc_scale"
    out = {"scale": scale, "screen": gen, "pipeline_wall_s": round(wall, 1), "rules": rule_figures(res),
           "training": training_figures(res, models)}
    if proc.returncode != 0:
        out["error"] = proc.stderr[-4000:]
    else:
        board = pd.read_csv(res / "leaderboard.csv")
        out["leaderboard"] = board.round(4).to_dict(orient="records")
    out["engines"] = {str(f.relative_to(res).with_suffix("")): {k: json.loads(f.read_text()).get(k)
                                                                for k in ("engine", "pred_entries", "wall_s")}
                      for f in sorted(res.glob("stage3/*/run.json")) + sorted(res.glob("stage3/*/prep.json"))}
    out["peak_rss_mb"] = max((r["max_rss_mb"] for r in out["rules"].values()), default=None)
    out["sizes_mb"] = {str(p.relative_to(wd)): round(p.stat().st_size / 2**20, 1)
                       for p in sorted(wd.rglob("*.h5ad"))}
    if not keep:
        shutil.rmtree(wd, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--models", nargs="+", default=["control", "cell_mean", "linear", "dygenept", "cfmvc"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--profile", default="vcc2025", help="evaluation.profile (vcc2025: cell-eval only; both/vcc2026 add "
                    "cell-eval2 on counts, not measured at this size)")
    ap.add_argument("--workdir", default=None, help="where the runs go (default: a folder beside the repo)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "pertpipe" / "embeddings"),
                    help="the knowledge stage's embedding cache, kept between runs")
    ap.add_argument("--keep", action="store_true", help="keep each run's files")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_scale.json")
    a = ap.parse_args(argv)
    root = Path(a.workdir or REPO.parent / "bench_scale_runs")
    root.mkdir(parents=True, exist_ok=True)
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = [run_scale(root, s, a.models, Path(a.cache), a.epochs, a.keep, a.profile) for s in a.scales]
    result = {"runs": runs, "targets": {"max_rule_rss_gb": 16, "max_streaming_growth": 1.3}}
    if len(runs) >= 2 and not any("error" in r for r in runs[-2:]):
        small, big = runs[-2], runs[-1]
        growth = {}
        for rule, fig in big["rules"].items():
            if rule in small["rules"] and small["rules"][rule]["max_rss_mb"] > 0:
                growth[rule] = round(fig["max_rss_mb"] / small["rules"][rule]["max_rss_mb"], 3)
        result["rss_growth"] = {"from_scale": small["scale"], "to_scale": big["scale"], "per_rule": growth,
                                "streaming_rules": {k: v for k, v in growth.items() if k.startswith(STREAMING)}}
    result["every_rule_under_16gb"] = all("error" not in r and r["peak_rss_mb"] is not None
                                          and r["peak_rss_mb"] <= 16 * 1024 for r in runs)
    result["markdown"] = markdown(result)
    print(json.dumps(result, indent=1))
    from results import save_if_asked

    save_if_asked(a, "bench_scale", result)


def markdown(result: dict) -> str:
    """Wall seconds and peak RSS of every rule at each scale, the growth between the last two, totals."""
    from results import md_table

    runs = result["runs"]
    rules = sorted({r for run in runs for r in run["rules"]})
    growth = (result.get("rss_growth") or {}).get("per_rule", {})
    rows = []
    for rule in rules:
        row = {"rule": rule}
        for run in runs:
            fig = run["rules"].get(rule) or {}
            row[f"{run['scale']:g}: wall s"] = fig.get("wall_s")
            row[f"{run['scale']:g}: peak RSS MB"] = fig.get("max_rss_mb")
        row["RSS growth"] = growth.get(rule)
        rows.append(row)
    cols = ["rule", *(f"{run['scale']:g}: {k}" for run in runs for k in ("wall s", "peak RSS MB")), "RSS growth"]
    head = "; ".join(f"scale {run['scale']:g}: {run['screen'].get('cells', '?')} cells, pipeline "
                     f"{run['pipeline_wall_s']} s, peak RSS of any rule {run['peak_rss_mb']} MB"
                     + (" (FAILED)" if "error" in run else "") for run in runs)
    return f"{head}; every rule under 16 GB: {result['every_rule_under_16gb']}.\n\n" + md_table(rows, cols)


if __name__ == "__main__":
    main()
