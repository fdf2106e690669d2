"""The real-data benchmark: every model and baseline on every real dataset the mirror holds, 3 seeds.

For each dataset (with the split that fits it) and each seed, the whole pipeline runs (stage 1, knowledge,
stages 2-3: `cell-eval run` and `cell-eval score` for every row). The seed drives the split and every model's
training, so the spread over seeds covers both. Printed as JSON (stdout) and a markdown table (stderr, and in
the JSON): DES / PDS / MAE / avg_score as mean ± sd over seeds; per row Δ avg_score against the strongest baseline
(the baseline row with the highest mean avg_score: control, cell_mean, celltype_mean, target_knockdown, additive,
knowledge_ridge, linear) with its paired bootstrap 95 % CI over perturbations and seeds, and `tie` where the CI
covers 0; shrunk models raw (`<model>_raw`, λ = 1) and validated, with λ and the anchor per seed (a row at λ = 0
in every seed is labelled as the baseline it equals); the paired per-seed Δ vs `cell_mean`; and per dataset whether
it can rank models at all (the split-half replicate ceiling against the cell-mean baseline, significant DE genes per
held-out perturbation at FDR < 0.05). The count statistics of each real file with counts sit beside those of the
simulator's realism presets (what the presets are fitted to).

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
sys.path.insert(0, str(REPO / "benchmarks"))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PRESET = REPO / "resources" / "presets" / "bench_real.yaml"
METRICS = ("DES", "PDS", "MAE", "avg_score", "energy_distance", "vcc2026_avg_score")


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
    """cell-eval's per-perturbation DES/PDS/MAE of each row and of the cell-mean baseline (`_baseline`), beside the
    truth's significant DE genes: enough to recompute avg_score on any resample of perturbations; and each row's
    per-perturbation energy distance (the local scorer's, `local_results.csv`) for its paired comparison."""
    real_de = pd.read_csv(res / "stage3" / models[0] / "real_de.csv")
    sig = real_de[real_de["fdr"] < 0.05].groupby("target").size()
    out = {}
    for m in [*models, "_baseline"]:
        folder = res / "stage3" / m
        if m == "_baseline" and not folder.exists():  # the run's own cell_mean row is the baseline (rules/common.smk)
            folder = res / "stage3" / "cell_mean"
        r = pd.read_csv(folder / "results.csv").set_index("perturbation")
        out[m] = {p: {"DES": round(float(r.loc[p, "overlap_at_N"]), 6),
                      "PDS": round(float(r.loc[p, "discrimination_score_l1"]), 6),
                      "MAE": round(float(r.loc[p, "mae"]), 7)} for p in r.index}
        local = folder / "local_results.csv"
        if m != "_baseline" and local.exists():
            e = pd.read_csv(local).set_index("perturbation")
            if "energy_distance" in e.columns:
                for p in out[m]:
                    if p in e.index and np.isfinite(e.loc[p, "energy_distance"]):
                        out[m][p]["energy_distance"] = round(float(e.loc[p, "energy_distance"]), 6)
    return {"sig_de_genes": {t: int(sig.get(t, 0)) for t in sorted(set(real_de["target"]))}, "models": out}


def collect(res: Path) -> dict:
    """Scores, shrinkage (λ, anchor, the baseline a λ = 0 row equals), the dataset's standing (split-half ceiling,
    verdict) and per-perturbation evidence of one finished run."""
    board = pd.read_csv(res / "leaderboard.csv").set_index("model")
    rename = {"overlap_at_N": "DES", "discrimination_score_l1": "PDS", "mae": "MAE"}
    board = board.rename(columns=rename)
    scores = {m: {k: float(board.loc[m, k]) if k in board.columns else float("nan") for k in METRICS}
              for m in board.index}
    shrink = {m: {"lambda": float(board.loc[m, "lambda"]), "anchor": none_if_nan(board.loc[m, "anchor"]),
                  "equals": none_if_nan(board.loc[m, "equals"]), "how": none_if_nan(board.loc[m, "shrinkage"])}
              for m in board.index if not pd.isna(board.loc[m, "lambda"])}
    equals = {m: board.loc[m, "equals"] for m in board.index if isinstance(board.loc[m, "equals"], str)}
    standing = json.loads((res / "standing.json").read_text())
    split = json.loads((res / "stage1" / "split.json").read_text())
    sig = standing["sig_de_genes"]
    signal = {"heldout_perturbations": len(sig), "sig_de_genes_per_perturbation": sig,
              "sig_de_median": standing["sig_de_median"], "control_cells_in_truth": split["n_controls"]["val"],
              "genes": int(len((res / "stage1" / "genes.txt").read_text().split())),
              "dropped_small_targets": split.get("dropped_small_targets", {}),
              "ceiling": standing["ceiling"], "can_rank": standing["can_rank"], "verdict": standing["verdict"]}
    return {"scores": scores, "shrinkage": shrink, "equals": equals, "priors": priors(res, list(board.index)),
            "signal": signal,
            "per_perturbation": per_perturbation(res, list(board.index))}


def priors(res: Path, models: list[str]) -> dict:
    """Per model built on a validated baseline prior: the chosen baseline, its cross-fitted error beside the other
    candidates', and (DyGenePT) the residual's validated scale γ and what it did on the validation groups."""
    out = {}
    for m in models:
        path = res / "stage2" / m.removesuffix("_raw") / "train_log.json"
        if not path.exists():
            continue
        log = json.loads(path.read_text())
        prior = log.get("prior") or log.get("centre")
        if prior:
            out[m] = {"chosen": prior["chosen"], "crossfit_mse": prior["crossfit_mse"],
                      "residual_gain": log.get("residual_gain")}
    return out


def none_if_nan(v):
    return None if isinstance(v, float) and np.isnan(v) else v


def _table(per: dict) -> pd.DataFrame:
    return pd.DataFrame([{"perturbation": p, "overlap_at_N": v["DES"], "discrimination_score_l1": v["PDS"],
                          "mae": v["MAE"]} for p, v in per.items()])


def is_baseline(row: str) -> bool:
    from pertpipe.models import MODELS, get_model_class

    return row in MODELS and get_model_class(row).baseline


def summarise(runs: dict[int, dict]) -> dict:
    """mean ± sd over seeds; Δ avg_score vs the strongest baseline (the baseline with the highest mean avg_score)
    with its paired bootstrap CI over perturbations and seeds, and the tie mark; paired per-seed Δ vs cell_mean."""
    from pertpipe.evaluation.standing import paired_bootstrap, standing

    ok = {s: r for s, r in runs.items() if "scores" in r}
    models = sorted({m for r in ok.values() for m in r["scores"]})
    mean_avg = {m: np.mean([r["scores"][m]["avg_score"] for r in ok.values() if m in r["scores"]]) for m in models}
    baselines = [m for m in models if is_baseline(m)]
    best = max(baselines, key=lambda m: mean_avg[m]) if baselines else None
    table = {"_strongest_baseline": best}
    for m in models:
        row = {}
        for k in METRICS:
            v = np.array([r["scores"][m].get(k, np.nan) for r in ok.values() if m in r["scores"]], dtype=float)
            if np.isnan(v).all():
                continue
            per_seed, v = v.tolist(), v[~np.isnan(v)]  # a seed whose run lacks the metric is left out, and counted
            row[k] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "per_seed": per_seed,
                      "n_seeds": int(len(v))}
            d = np.array([r["scores"][m].get(k, np.nan) - r["scores"]["cell_mean"].get(k, np.nan) for r in ok.values()
                          if m in r["scores"] and "cell_mean" in r["scores"]], dtype=float)
            d = d[~np.isnan(d)]
            if len(d):
                row[k]["minus_cell_mean"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0}
        row["shrinkage"] = [r["shrinkage"].get(m) for r in ok.values() if m in r.get("shrinkage", {})]
        row["equals"] = [r.get("equals", {}).get(m) for r in ok.values() if m in r["scores"]]
        row["prior"] = [r.get("priors", {}).get(m) for r in ok.values() if m in r["scores"]]
        row["baseline"] = m in baselines
        if best and m != best:
            pp = [r["per_perturbation"]["models"] for r in ok.values() if m in r["scores"]]
            d = paired_bootstrap([(_table(p[m]), _table(p[best]), _table(p["_baseline"])) for p in pp])
            row["vs_strongest_baseline"] = {**d, "standing": standing(d), "baseline": best}
        row["cell_level"] = {ref: cell_level(ok, m, ref) for ref in dict.fromkeys([best, "cell_mean"])
                             if ref and ref != m and ref in models}
        table[m] = row
    return table


def cell_level(runs: dict[int, dict], m: str, ref: str) -> dict:
    """Row ``m`` against row ``ref`` on the cell-level metrics (lower energy distance, higher vcc2026 avg_score is
    better): energy distance paired per (seed, perturbation) with its bootstrap 95 % interval
    (:func:`pertpipe.evaluation.standing.paired_mean_bootstrap`); the VCC 2026 avg_score (one figure per run, its
    per-perturbation parts are not all per perturbation) paired per seed, with the seeds it is higher in."""
    from pertpipe.evaluation.standing import paired_mean_bootstrap, standing

    out: dict = {}
    x, y = {}, {}
    for s, r in runs.items():
        pm = r["per_perturbation"]["models"]
        for p, v in pm.get(m, {}).items():
            if "energy_distance" in v and "energy_distance" in pm.get(ref, {}).get(p, {}):
                x[f"{s}:{p}"], y[f"{s}:{p}"] = v["energy_distance"], pm[ref][p]["energy_distance"]
    if x:
        d = paired_mean_bootstrap(pd.Series(x), pd.Series(y))
        out["energy_distance"] = {**d, "standing": standing({**d, "delta": -d["delta"]})}  # lower is better
    d = [r["scores"][m]["vcc2026_avg_score"] - r["scores"][ref]["vcc2026_avg_score"] for r in runs.values()
         if m in r["scores"] and ref in r["scores"]]
    d = [v for v in d if np.isfinite(v)]
    if d:
        out["vcc2026_avg_score"] = {"delta": float(np.mean(d)), "per_seed": d, "higher_in": int(sum(v > 0 for v in d)),
                                    "seeds": len(d)}
    return out


def _label(m: str, r: dict) -> str:
    same = [e for e in r.get("equals", []) if e]
    if same and not any(s and s.get("lambda") == 0 for s in r.get("shrinkage", [])):
        if len(set(same)) > 2:  # a different baseline or blend per seed: named in the prior column
            return f"{m} = its validated baseline (per seed in the last column) in {len(same)} of {len(r['equals'])} seeds"
        return f"{m} = {', '.join(sorted(set(same)))} in {len(same)} of {len(r['equals'])} seeds"
    eq = {s["equals"] for s in r.get("shrinkage", []) if s and s.get("lambda") == 0}
    zeros = sum(1 for s in r.get("shrinkage", []) if s and s.get("lambda") == 0)
    if zeros and zeros == len(r["shrinkage"]):
        return f"{m} = {', '.join(sorted(eq))} (λ 0 in every seed)"
    raw = sum(1 for s in r.get("shrinkage", []) if s and str(s.get("how") or "").startswith("raw: ") and
              "held-out" in str(s.get("how")))
    if raw:
        return f"{m} (used raw in {raw} of {len(r['shrinkage'])} seeds: too few held-out groups to validate λ)"
    return m


def _cells(r: dict, best: str | None, metric: str) -> str:
    """The Δ cell-level cell: against the strongest baseline, then against cell_mean (lower energy is better)."""
    parts = []
    for ref in dict.fromkeys([best, "cell_mean"]):
        c = (r.get("cell_level") or {}).get(ref, {}).get(metric)
        if not c:
            continue
        if metric == "energy_distance":
            parts.append(f"{c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] {c['standing']}")
        else:
            parts.append(f"{c['delta']:+.3f} ({c['higher_in']}/{c['seeds']})")
    return " / ".join(parts) or "—"


def markdown(name: str, table: dict, runs: dict[int, dict]) -> str:
    ok = [r for r in runs.values() if "signal" in r]
    sig = "; ".join(f"seed {s}: {r['signal']['heldout_perturbations']} held out, median "
                    f"{r['signal']['sig_de_median']:g} sig. DE genes, {r['signal']['control_cells_in_truth']} controls, "
                    f"split-half ceiling {r['signal']['ceiling']['avg_score']:.3f} "
                    f"[{r['signal']['ceiling']['ci_low']:.3f}, {r['signal']['ceiling']['ci_high']:.3f}]"
                    for s, r in runs.items() if "signal" in r)
    can = sum(r["signal"]["can_rank"] for r in ok)
    verdict = (f"**This dataset {'can' if can == len(ok) else 'cannot'} rank models on avg_score** (the split-half "
               f"replicate is distinguishable from the cell-mean baseline in {can} of {len(ok)} seeds).")
    best = table.get("_strongest_baseline")
    lines = [f"**{name}** ({ok[0]['signal']['genes'] if ok else '?'} genes; truth: {sig})", "", verdict, "",
             f"| model | DES | PDS | MAE | avg_score | Δ avg vs {best} (strongest baseline) [95 % CI] | standing | "
             f"Δ avg vs cell_mean | energy_distance | Δ energy vs {best} / vs cell_mean [95 % CI] | "
             f"vcc2026_avg_score | Δ vcc2026 vs {best} / vs cell_mean (seeds higher) | prior (γ) per seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [m for m in table if not m.startswith("_")]
    for m in sorted(rows, key=lambda m: -table[m]["avg_score"]["mean"]):
        r = table[m]
        f = lambda k: f"{r[k]['mean']:.4f} ± {r[k]['sd']:.4f}" if k in r else "—"  # noqa: E731
        d = (f"{r['avg_score']['minus_cell_mean']['mean']:+.4f} ± {r['avg_score']['minus_cell_mean']['sd']:.4f}"
             if "minus_cell_mean" in r["avg_score"] and m != "cell_mean" else "")
        vs = r.get("vs_strongest_baseline")
        ci = f"{vs['delta']:+.4f} [{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}]" if vs else "—"
        st = vs["standing"] if vs else ("strongest baseline" if m == best else "")
        pri = ", ".join(p["chosen"] + (f" (γ {p['residual_gain']['scale']:g})" if p.get("residual_gain") else "")
                        for p in r.get("prior", []) if p)
        name_ = _label(m, r) + (" *(baseline)*" if r.get("baseline") else "")
        lines.append(f"| {name_} | {f('DES')} | {f('PDS')} | {f('MAE')} | {f('avg_score')} | {ci} | {st} | {d} | "
                     f"{f('energy_distance')} | {_cells(r, best, 'energy_distance')} | {f('vcc2026_avg_score')} | "
                     f"{_cells(r, best, 'vcc2026_avg_score')} | {pri} |")
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
    ap.add_argument("--save", action="store_true", help="also write benchmarks/results/bench_real.json (the results "
                    "page's source; render it with python benchmarks/results.py)")
    ap.add_argument("--name", default="bench_real", help="the results file's name (e.g. bench_unseen_line for the "
                    "unseen-cell-line datasets)")
    ap.add_argument("--note", default=None, help="a line for the results page (e.g. the commit finished runs were made "
                    "with, when collected with --no-rerun)")
    args = ap.parse_args()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench_real_"))
    out = {"benchmark": "real data: every model and baseline, 3 seeds, paired bootstrap vs the strongest baseline",
           "cores": os.cpu_count(),
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
    out["markdown"] = (f"{args.note}\n\n" if args.note else "") + "\n".join(md)
    print(out["markdown"], file=sys.stderr)
    print(json.dumps(out, indent=2))
    from results import save_if_asked

    save_if_asked(args, args.name, out, script="bench_real")


if __name__ == "__main__":
    main()
