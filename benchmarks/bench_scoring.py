"""Local scorer and cell-eval2 vs `cell-eval run --profile vcc` on the same predictions: wall time and agreement.

Runs the whole pipeline (stages 1-3, for the leaderboard) for each dataset (the demo, and the Norman part of the perturbench file
through the ../shared/data mirror, aligned to the VCC 18,080 genes), then scores every model's predictions
both ways in one process each, and prints JSON: wall seconds (cell-eval as a CLI process, as the pipeline
runs it; the local scorer in-process, and again as a fresh process to include interpreter start-up),
their ratio, and the largest per-perturbation |local - cell-eval| per metric. `cell-eval2` (PyPI, a
reimplementation of cell-eval) runs beside them as a CLI process with its `v1` preset (upstream cell-eval's
rules and metric names; FDR per perturbation as our cell-eval pin computes it) and profile `vcc`: its wall
seconds and its largest |cell-eval2 - cell-eval| per metric.

    python benchmarks/bench_scoring.py [--datasets demo perturbench_norman] [--models control cell_mean linear]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

CONFIGS = {
    "demo": {"dataset": "demo"},
    "perturbench_norman": {"dataset": "perturbench_norman", "mirror": str(SHARED), "lock_file": None,
                           "stage1": {"universe": {"kind": "vcc"},
                                      "split": {"strategy": "combo", "single_fraction": 0.25,
                                                "combo_fraction": 0.3}}},
}


def run_pipeline(workdir: Path, cfg: dict, models: list[str]) -> Path:
    import yaml

    cfg = {**cfg, "models": list(models)}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "snakemake", "all", "-s", str(REPO / "Snakefile"), "--cores", "2",
                    "--directory", str(workdir), "--configfile", str(workdir / "cfg.yaml")],
                   check=True, capture_output=True, env=env)
    return workdir / "results" / cfg["dataset"]


def cell_eval2(pred: Path, truth: Path, ce) -> tuple[float | None, dict[str, float] | str]:
    """`cell-eval2 run --preset v1 --profile vcc` as a process: wall seconds and max |cell-eval2 - cell-eval| per
    metric (cell-eval2 writes results.csv long: perturbation, metric, value). Its v1 preset pools the FDR over
    all perturbations (pdex 0.1.27, older cell-eval); our pin (cell-eval 0.8.2, pdex 0.3.0) corrects per
    perturbation, so `de.fdr_scope=per_pert` (with the pooled FDR DES differed by up to 0.15 on the demo)."""
    import shutil

    import pandas as pd

    from pertpipe.evaluation.metric_registry import metrics

    exe = shutil.which("cell-eval2")
    if exe is None:
        return None, "cell-eval2 not installed (pip install cell-eval2==0.20.0)"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([exe, "run", "-ap", str(pred), "-ar", str(truth), "-o", tmp, "--preset", "v1", "--profile",
                        "vcc", "--input-type", "lognorm", "--pert-col", "target_gene", "--control", "non-targeting",
                        "--set", "de.backend=pdex", "--set", "de.fdr_scope=per_pert"], check=True, capture_output=True)
        wall = time.perf_counter() - t0
        long = pd.read_csv(Path(tmp) / "results.csv")
    wide = long.pivot(index="perturbation", columns="metric", values="value").loc[ce.index]
    return round(wall, 2), {mt.name: float((wide[mt.column] - ce[mt.column]).abs().max())
                            for mt in metrics(in_cell_eval=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["demo", "perturbench_norman"])
    ap.add_argument("--models", nargs="+", default=["control", "cell_mean", "linear"])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_scoring.json")
    args = ap.parse_args()

    import pandas as pd

    from pertpipe.evaluation.celleval import versions
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.scoring import score_local

    out = {"benchmark": "local scorer vs cell-eval run --profile vcc", "versions": versions(), "runs": []}
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scoring_"))
    for ds in args.datasets:
        if ds != "demo" and not SHARED.is_dir():
            out["runs"].append({"dataset": ds, "skipped": f"{SHARED} not present"})
            continue
        res = run_pipeline(base / ds, CONFIGS[ds], args.models)
        truth = res / "stage1" / "truth.h5ad"
        for m in args.models:
            pred = res / "stage2" / m / "predictions.h5ad"
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run(["cell-eval", "run", "-ap", str(pred), "-ar", str(truth), "-o", tmp, "--profile", "vcc",
                                "--num-threads", "2", "--control-pert", "non-targeting", "--pert-col", "target_gene"],
                               check=True, capture_output=True)
                ce_s = time.perf_counter() - t0
                ce = pd.read_csv(Path(tmp) / "results.csv").set_index("perturbation")
            ce2_s, ce2_diffs = cell_eval2(pred, truth, ce)
            t0 = time.perf_counter()
            table, _agg = score_local(pred, truth)
            local_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from pertpipe.evaluation.scoring import score_local; "
                            "score_local(sys.argv[1], sys.argv[2])", str(pred), str(truth)], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            local_proc_s = time.perf_counter() - t0
            lo = table.set_index("perturbation").loc[ce.index]
            diffs = {mt.name: float((lo[mt.column] - ce[mt.column]).abs().max()) for mt in metrics(in_cell_eval=True)}
            row = {"dataset": ds, "model": m, "perturbations": int(len(ce)), "genes": None,
                   "cell_eval_s": round(ce_s, 2), "local_s": round(local_s, 3),
                   "local_process_s": round(local_proc_s, 2), "speedup": round(ce_s / local_s, 1),
                   "speedup_process": round(ce_s / local_proc_s, 1), "max_abs_diff": diffs,
                   "cell_eval2_s": ce2_s, "cell_eval2_max_abs_diff": ce2_diffs,
                   "targets_met": {"speedup>=10": ce_s / local_s >= 10, "MAE<=1e-6": diffs["MAE"] <= 1e-6,
                                   "PDS<=1e-6": diffs["PDS"] <= 1e-6, "DES<=0.02": diffs["DES"] <= 0.02}}
            import anndata as ad
            row["genes"] = int(ad.read_h5ad(truth, backed="r").n_vars)
            out["runs"].append(row)
            print(json.dumps(row), file=sys.stderr)
        board = res.parent / ds / "leaderboard.md"
        if board.exists():
            out.setdefault("leaderboards", {})[ds] = board.read_text()
    out["markdown"] = markdown(out)
    print(json.dumps(out, indent=2))
    from results import save_if_asked

    save_if_asked(args, "bench_scoring", out)


COLUMNS = ["dataset", "model", "perturbations x genes", "cell-eval run s", "cell-eval2 run s",
           "local s (in process / process)", "local vs cell-eval max |Δ| DES / PDS / MAE",
           "cell-eval2 vs cell-eval max |Δ| DES / PDS / MAE"]


def markdown(out: dict) -> str:
    """Wall seconds of each engine and its largest per-perturbation difference to cell-eval, per dataset and model."""
    from results import md_table

    rows = []
    for r in out["runs"]:
        if "skipped" in r:
            rows.append({"dataset": r["dataset"], "model": r["skipped"]})
            continue
        d2 = r.get("cell_eval2_max_abs_diff")
        d2 = d2 if isinstance(d2, dict) else {}
        rows.append({"dataset": r["dataset"], "model": r["model"], "perturbations x genes":
                     f"{r['perturbations']} x {r['genes']:,}", "cell-eval run s": r["cell_eval_s"],
                     "cell-eval2 run s": r.get("cell_eval2_s"), "local s (in process / process)":
                     f"{r['local_s']} / {r['local_process_s']}",
                     "local vs cell-eval max |Δ| DES / PDS / MAE": " / ".join(
                         f"{r['max_abs_diff'][k]:.2g}" for k in ("DES", "PDS", "MAE")),
                     "cell-eval2 vs cell-eval max |Δ| DES / PDS / MAE": " / ".join(
                         f"{d2[k]:.2g}" if isinstance(d2.get(k), float) else "" for k in ("DES", "PDS", "MAE"))})
    return ("cell-eval " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()) + "; models scored on the same "
            "prediction files by each engine.\n\n" + md_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
