"""Model benchmark: every model on the demo and on the Norman subset, stage-3 leaderboards + training speed.

Runs the whole pipeline (stage 1, knowledge, stages 2-3) per dataset with control, cell_mean, linear and the
deep models, then prints JSON: each dataset's leaderboard (DES, PDS, MAE raw and scaled, avg_score) and, per
model, training wall time and cells/s (per stage for CFM-VC), sampling cells/s (predicted cells over the predict
rule's time) and the predicted per-cell variance over the truth's (median and range over perturbations). CFM-VC
runs once per ``--cfmvc-sources`` entry (the default source in the main run, the others in a re-run of its own
rules), so both source choices are reported. The device in train_log.json says where training ran.

    python benchmarks/bench_models.py [--datasets demo perturbench_norman] [--deep dygenept cfmvc]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"

DATASETS = {
    "demo": {"dataset": "demo"},
    # Norman 2019 part of the perturbench file: unseen single targets and held-out doubles (combo split)
    "perturbench_norman": {"dataset": "perturbench_norman", "mirror": str(SHARED), "lock_file": None,
                           "stage1": {"universe": {"kind": "source"},
                                      "split": {"strategy": "combo", "single_fraction": 0.25, "combo_fraction": 0.3,
                                                "control_val_fraction": 0.5}}},
}


def _run(wd: Path, cfg: dict) -> dict:
    """One Snakemake run of `all` in ``wd``; the leaderboard plus per-model training/sampling/variance figures."""
    from pertpipe.evaluation.metrics import variance_ratio

    proc = run_all(wd, cfg)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:]}
    res = wd / "results" / cfg["dataset"]
    board = pd.read_csv(res / "leaderboard.csv")
    training, sampling, spread = {}, {}, {}
    for m in board["model"]:
        tl = json.loads((res / "stage2" / m / "train_log.json").read_text())
        training[m] = {"train_wall_s": tl.get("wall_s"), "cells_per_s": tl.get("cells_per_s"),
                       "device": tl.get("device"), "epochs_run": tl.get("epochs_run")}
        if tl.get("stages"):
            training[m]["stages"] = tl["stages"]
            training[m].update({k: tl.get(k) for k in ("likelihood", "source", "decode")})
        pj = json.loads((res / "stage2" / m / "predict.json").read_text())
        sampling[m] = {"cells": pj["cells"], "predict_s": pj["predict_s"],
                       "cells_per_s": round(pj["cells"] / pj["predict_s"], 1) if pj["predict_s"] else None}
        vr = variance_ratio(res / "stage2" / m / "predictions.h5ad", res / "stage1" / "truth.h5ad")
        spread[m] = {k: (round(v, 3) if v is not None else None) for k, v in vr.items() if k != "per_perturbation"}
    return {"leaderboard": board.round(4).to_dict(orient="records"), "training": training, "sampling": sampling,
            "variance_ratio": spread, "leaderboard_md": (res / "leaderboard.md").read_text()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--deep", nargs="+", default=["dygenept", "cfmvc"])
    ap.add_argument("--cfmvc-sources", nargs="+", default=["gaussian", "control"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_models.json")
    args = ap.parse_args()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_models_"))
    out = {"benchmark": "models: stage-3 leaderboards and training speed", "cores": os.cpu_count(), "runs": {}}
    for ds in args.datasets:
        if ds != "demo" and not SHARED.is_dir():
            out["runs"][ds] = {"skipped": f"{SHARED} not present"}
            continue
        wd = base / ds
        wd.mkdir(parents=True, exist_ok=True)
        cfg = {**DATASETS[ds], "seed": args.seed, "models": ["control", "cell_mean", "linear", *args.deep],
               "knowledge": {"cache_dir": str(base / "cache")}}
        sources = args.cfmvc_sources if "cfmvc" in args.deep else []
        if sources:
            cfg["model_params"] = {"cfmvc": {"source": sources[0]}}
        run = _run(wd, cfg)
        if "error" in run:
            out["runs"][ds] = run
            continue
        for src in sources[1:]:  # the other source choice: re-trains and re-scores only CFM-VC
            other = _run(wd, {**cfg, "models": ["cfmvc"], "model_params": {"cfmvc": {"source": src}}})
            for row in other.get("leaderboard", []):
                run["leaderboard"].append({**row, "model": f"cfmvc (source={src})"})
            for key in ("training", "sampling", "variance_ratio"):
                run[key][f"cfmvc (source={src})"] = other[key]["cfmvc"]
            run["leaderboard"] = sorted(run["leaderboard"], key=lambda r: -r["avg_score"])
        if sources:
            for key in ("training", "sampling", "variance_ratio"):
                run[key][f"cfmvc (source={sources[0]})"] = run[key].pop("cfmvc")
            for row in run["leaderboard"]:
                row["model"] = f"cfmvc (source={sources[0]})" if row["model"] == "cfmvc" else row["model"]
        out["runs"][ds] = run
        print(json.dumps({ds: {k: run[k] for k in ("training", "sampling")}}), file=sys.stderr)
    out["markdown"] = markdown(out)
    print(json.dumps(out, indent=2))
    from results import save_if_asked

    save_if_asked(args, "bench_models", out)


def markdown(out: dict) -> str:
    """Per dataset: each row's DES / PDS / MAE / avg_score, training time, sampling speed and variance ratio."""
    from results import md_table

    parts = []
    for ds, run in out["runs"].items():
        if "leaderboard" not in run:
            parts.append(f"### {ds}\n\n{run.get('skipped') or 'failed: ' + run.get('error', '')[-300:]}\n")
            continue
        rows = []
        for r in run["leaderboard"]:
            m = r["model"]
            rows.append({"model": m, **{k: r.get(k) for k in ("DES", "PDS", "MAE", "avg_score")},
                         "train s": (run["training"].get(m) or {}).get("train_wall_s"),
                         "sampling cells/s": (run["sampling"].get(m) or {}).get("cells_per_s"),
                         "variance ratio": (run["variance_ratio"].get(m) or {}).get("median")})
        parts.append(f"### {ds}\n\n" + md_table(rows, ["model", "DES", "PDS", "MAE", "avg_score", "train s",
                                                         "sampling cells/s", "variance ratio"]))
    return f"{out['cores']} cores, one seed; DES/PDS/MAE from cell-eval run, scaled against cell_mean.\n\n" + "\n".join(parts)


if __name__ == "__main__":
    main()
