"""The real-data benchmark: every model on every real dataset the mirror holds, 3 seeds, paired differences.

For each dataset (with the split that fits it) and each seed, the whole pipeline runs (stage 1, knowledge,
stages 2-3: `cell-eval run` and `cell-eval score` for every model). The seed drives the split and every model's
training, so the spread over seeds covers both. Printed as JSON (stdout) and a markdown table (stderr, and in
the JSON): DES / PDS / MAE / avg_score as mean ± sd over seeds, the paired per-seed difference of every model to
`cell_mean` and to `linear` (mean ± sd), the deep models' validated shrinkage λ, and the truth's signal
(significant DE genes per held-out perturbation at FDR < 0.05 from cell-eval's real_de.csv, control cells in the
truth) so a reader sees when a dataset cannot rank models. The count statistics of each real file with counts
sit beside those of the simulator's realism presets (what the presets are fitted to).

    python benchmarks/bench_real.py [--datasets papalexi2021 perturbench_norman perturbench_glioma demo_sparse]
                                    [--seeds 0 1 2] [--models control cell_mean linear dygenept cfmvc]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PRESET = REPO / "resources" / "presets" / "bench_real.yaml"
METRICS = ("DES", "PDS", "MAE", "avg_score")


def dataset_configs() -> dict[str, dict]:
    """Per dataset: the config fragment (split, universe) from the preset, plus the mirror."""
    preset = yaml.safe_load(PRESET.read_text())
    out = {}
    for name, frag in preset["datasets"].items():
        cfg = {**preset["common"], **frag}
        if frag.get("dataset") != "demo":
            cfg.update(mirror=str(SHARED), lock_file=None)
        out[name] = cfg
    return out


def run_once(wd: Path, cfg: dict, *, rerun: bool = True) -> dict:
    """Run the pipeline in ``wd`` (unless ``rerun`` is False and its leaderboard exists) and collect the figures."""
    res = wd / "results" / cfg["dataset"]
    if rerun or not (res / "leaderboard.csv").exists():
        proc = run_all(wd, cfg)
        if proc.returncode != 0:
            return {"error": proc.stderr[-3000:]}
    return collect(res)


def per_perturbation(res: Path, models: list[str]) -> dict:
    """cell-eval's per-perturbation DES/PDS/MAE of each model, beside the truth's significant DE genes."""
    real_de = pd.read_csv(res / "stage3" / models[0] / "real_de.csv")
    sig = real_de[real_de["fdr"] < 0.05].groupby("target").size()
    out = {}
    for m in models:
        r = pd.read_csv(res / "stage3" / m / "results.csv").set_index("perturbation")
        out[m] = {p: {"DES": round(float(r.loc[p, "overlap_at_N"]), 4),
                      "PDS": round(float(r.loc[p, "discrimination_score_l1"]), 4),
                      "MAE": round(float(r.loc[p, "mae"]), 5)} for p in r.index}
    return {"sig_de_genes": {t: int(sig.get(t, 0)) for t in sorted(set(real_de["target"]))}, "models": out}


def collect(res: Path) -> dict:
    """Scores, shrinkage λ, the truth's signal and per-perturbation evidence of one finished run."""
    board = pd.read_csv(res / "leaderboard.csv").set_index("model")
    rename = {"overlap_at_N": "DES", "discrimination_score_l1": "PDS", "mae": "MAE"}
    board = board.rename(columns=rename)
    scores = {m: {k: float(board.loc[m, k]) for k in METRICS} for m in board.index}
    lam = {}
    for m in board.index:
        tl = json.loads((res / "stage2" / m / "train_log.json").read_text())
        if tl.get("shrinkage"):
            lam[m] = tl["shrinkage"]["lambda"]
    real_de = pd.read_csv(res / "stage3" / board.index[0] / "real_de.csv")
    sig = real_de[real_de["fdr"] < 0.05].groupby("target").size()
    targets = sorted(set(real_de["target"]))
    split = json.loads((res / "stage1" / "split.json").read_text())
    signal = {"heldout_perturbations": len(targets),
              "sig_de_genes_per_perturbation": {t: int(sig.get(t, 0)) for t in targets},
              "sig_de_median": float(np.median([sig.get(t, 0) for t in targets])) if targets else 0.0,
              "control_cells_in_truth": split["n_controls"]["val"],
              "genes": int(len((res / "stage1" / "genes.txt").read_text().split())),
              "dropped_small_targets": split.get("dropped_small_targets", {})}
    return {"scores": scores, "shrinkage_lambda": lam, "signal": signal,
            "per_perturbation": per_perturbation(res, list(board.index))}


def summarise(runs: dict[int, dict]) -> dict:
    """mean ± sd over seeds and paired per-seed differences to cell_mean and linear."""
    ok = {s: r for s, r in runs.items() if "scores" in r}
    models = sorted({m for r in ok.values() for m in r["scores"]})
    table = {}
    for m in models:
        row = {}
        for k in METRICS:
            v = np.array([r["scores"][m][k] for r in ok.values() if m in r["scores"]])
            row[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "per_seed": v.tolist()}
            for ref in ("cell_mean", "linear"):
                d = np.array([r["scores"][m][k] - r["scores"][ref][k] for r in ok.values()
                              if m in r["scores"] and ref in r["scores"]])
                if len(d):
                    row[k][f"minus_{ref}"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0}
        lams = [r["shrinkage_lambda"][m] for r in ok.values() if m in r.get("shrinkage_lambda", {})]
        if lams:
            row["shrinkage_lambda"] = lams
        table[m] = row
    return table


def markdown(name: str, table: dict, runs: dict[int, dict]) -> str:
    ok = [r for r in runs.values() if "signal" in r]
    sig = "; ".join(f"seed {s}: {r['signal']['heldout_perturbations']} held out, median "
                    f"{r['signal']['sig_de_median']:g} sig. DE genes, {r['signal']['control_cells_in_truth']} controls"
                    for s, r in runs.items() if "signal" in r)
    lines = [f"**{name}** ({ok[0]['signal']['genes'] if ok else '?'} genes; truth: {sig})", "",
             "| model | DES | PDS | MAE | avg_score | Δ MAE vs cell_mean | Δ avg vs cell_mean | Δ avg vs linear | λ |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = sorted(table, key=lambda m: -table[m]["avg_score"]["mean"])
    for m in order:
        r = table[m]
        f = lambda k: f"{r[k]['mean']:.4f} ± {r[k]['sd']:.4f}"  # noqa: E731
        d = lambda k, ref: (f"{r[k][f'minus_{ref}']['mean']:+.4f} ± {r[k][f'minus_{ref}']['sd']:.4f}"  # noqa: E731
                            if f"minus_{ref}" in r[k] and m != ref else "")
        lam = ", ".join(f"{x:g}" for x in r.get("shrinkage_lambda", []))
        lines.append(f"| {m} | {f('DES')} | {f('PDS')} | {f('MAE')} | {f('avg_score')} | {d('MAE', 'cell_mean')} | "
                     f"{d('avg_score', 'cell_mean')} | {d('avg_score', 'linear')} | {lam} |")
    return "\n".join(lines) + "\n"


def count_regimes() -> dict:
    """Count statistics of the real count files beside the simulator's realism presets."""
    import anndata as ad

    from pertpipe.data.simulate import DemoParams, count_statistics, simulate_demo

    out = {}
    for r in ("sparse", "typical"):
        with tempfile.TemporaryDirectory() as d:
            p = DemoParams.from_config({"realism": r, "n_single_targets": 20, "n_double_targets": 2})
            out[f"simulator:{r}"] = count_statistics(ad.read_h5ad(simulate_demo(d, seed=0, params=p)["counts"]).X)
    pap = SHARED / "perturb" / "papalexi2021" / "lowmoi_example_data.rda"
    if pap.exists():
        from pertpipe.data.sources import read_sceptre_rda

        out["papalexi2021 (299 genes)"] = count_statistics(read_sceptre_rda(pap).X)
    return out


def main() -> None:
    configs = dataset_configs()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=list(configs))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=None, help="default: the preset's models (every registered one)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-rerun", action="store_true", help="collect finished runs in --workdir without Snakemake")
    args = ap.parse_args()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_real_"))
    out = {"benchmark": "real data: every model, 3 seeds, paired vs cell_mean and linear", "cores": os.cpu_count(),
           "count_regimes": count_regimes(), "datasets": {}}
    md = []
    for name in args.datasets:
        cfg = dict(configs[name])
        if cfg.get("mirror") and not SHARED.is_dir():
            out["datasets"][name] = {"skipped": f"{SHARED} not present"}
            continue
        if args.models:
            cfg["models"] = args.models
        runs = {}
        for seed in args.seeds:
            wd = base / name / f"seed{seed}"
            wd.mkdir(parents=True, exist_ok=True)
            runs[seed] = run_once(wd, {**cfg, "seed": seed, "knowledge": {"cache_dir": str(base / "cache")}},
                                  rerun=not args.no_rerun)
            print(json.dumps({name: {seed: runs[seed].get("scores", runs[seed].get("error"))}}), file=sys.stderr)
        table = summarise(runs)
        out["datasets"][name] = {"config": cfg, "runs": runs, "summary": table}
        md.append(markdown(name, table, runs))
    out["markdown"] = "\n".join(md)
    print(out["markdown"], file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
