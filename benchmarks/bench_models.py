"""Model benchmark: every model on the demo and on the Norman subset, stage-3 leaderboards + training speed.

Runs the whole pipeline (stage 1, knowledge, stages 2-3) per dataset with control, cell_mean, linear and the
deep models, then prints JSON: each dataset's leaderboard (DES, PDS, MAE raw and scaled, avg_score) and, per
model, training wall time and cells/s (CPU here; the device in train_log.json says where it ran).

    python benchmarks/bench_models.py [--datasets demo perturbench_norman] [--deep dygenept]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

DATASETS = {
    "demo": {"dataset": "demo"},
    # Norman 2019 part of the perturbench file: unseen single targets and held-out doubles (combo split)
    "perturbench_norman": {"dataset": "perturbench_norman", "mirror": str(SHARED), "lock_file": None,
                           "stage1": {"universe": {"kind": "source"},
                                      "split": {"strategy": "combo", "single_fraction": 0.25, "combo_fraction": 0.3,
                                                "control_val_fraction": 0.5}}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--deep", nargs="+", default=["dygenept"])
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_models_"))
    out = {"benchmark": "models: stage-3 leaderboards and training speed", "cores": os.cpu_count(), "runs": {}}
    for ds in args.datasets:
        if ds != "demo" and not SHARED.is_dir():
            out["runs"][ds] = {"skipped": f"{SHARED} not present"}
            continue
        wd = base / ds
        wd.mkdir(parents=True, exist_ok=True)
        cfg = {**DATASETS[ds], "models": ["control", "cell_mean", "linear", *args.deep],
               "knowledge": {"cache_dir": str(base / "cache")}}
        (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "snakemake", "all", "-s", str(REPO / "Snakefile"), "--cores", "2",
                               "--directory", str(wd), "--configfile", str(wd / "cfg.yaml")],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            out["runs"][ds] = {"error": proc.stderr[-3000:]}
            continue
        res = wd / "results" / cfg["dataset"]
        board = pd.read_csv(res / "leaderboard.csv")
        speed = {}
        for m in board["model"]:
            tl = json.loads((res / "stage2" / m / "train_log.json").read_text())
            speed[m] = {"train_wall_s": tl.get("wall_s"), "cells_per_s": tl.get("cells_per_s"),
                        "device": tl.get("device"), "epochs_run": tl.get("epochs_run")}
        out["runs"][ds] = {"leaderboard": board.round(4).to_dict(orient="records"), "training": speed,
                           "leaderboard_md": (res / "leaderboard.md").read_text()}
        print(json.dumps({ds: out["runs"][ds]["training"]}), file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
