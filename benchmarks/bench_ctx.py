"""Cross-context transfer benchmark: leave one context out, every context in turn, 3 seeds, through the pipeline.

* glioma (perturbench_glioma: CRISPRi in 3 glioma lines, log1p, 500 genes): every line held out in turn
  (``cell_line_holdout`` with ``fraction: 1``); cell-eval's DES/PDS/MAE/avg_score beside the effect metrics
  (Pearson / Spearman / precision@50 of the predicted vs real pseudobulk change).
* L1000 level 5 (l1000_cmapr_level5, the original cmapR ``ds.RData``: 3 compounds over 65 cell lines): each of
  the 9 lines that carry all three compounds held out in turn; the signature metrics (Pearson, Spearman, RMSE,
  precision@k per held-out signature).

Models: ``ctxfusion`` (gated, default), ``ctxfusion_concat`` (fusion: concat), ``ctxfusion_scgpt_z``
(signal_encoder: scgpt_binned_z, on a randomly initialised checkpoint in scGPT's format: no real scGPT weights
are reachable here), ``context_mean``, and on glioma ``cell_mean`` and ``linear`` (which need gene targets; the
L1000 perturbations are compounds). Paired differences are per (held-out context, seed).

    python benchmarks/bench_ctx.py [--workdir DIR] [--seeds 0 1 2] [--parts glioma l1000] [--contexts A375 ...]
                                   [--no-rerun]

Prints JSON (and writes DIR/bench_ctx.json and DIR/bench_ctx.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
GLIOMA_LINES = ["A172", "T98G", "U87MG"]
L1000_LINES = ["MCF7", "A375", "PC3", "VCAP", "A549", "HT29", "HA1E", "HCC515", "HEPG2"]
GLIOMA_METRICS = ("pearson_delta", "spearman_delta", "precision50_delta", "DES", "PDS", "MAE", "avg_score")
L1000_METRICS = ("pearson", "spearman", "rmse", "precision@10", "precision@50", "precision@100")


def model_block(ckpt: Path) -> dict:
    return {"ctxfusion": {}, "ctxfusion_concat": {"model": "ctxfusion", "fusion": "concat"},
            "ctxfusion_scgpt_z": {"model": "ctxfusion", "signal_encoder": "scgpt_binned_z",
                                  "scgpt_checkpoint": str(ckpt)}}


def configs(part: str, line: str, seed: int, ckpt: Path) -> dict:
    ctx_models = ["ctxfusion", "ctxfusion_concat", "ctxfusion_scgpt_z", "context_mean"]
    split = {"strategy": "cell_line_holdout", "fraction": 1.0, "holdout_cell_type": line}
    base = {"seed": seed, "mirror": str(SHARED), "lock_file": None, "model_params": model_block(ckpt),
            "stage1": {"universe": {"kind": "source"}, "split": split}}
    if part == "glioma":
        return {**base, "dataset": "perturbench_glioma", "models": ctx_models + ["cell_mean", "linear"]}
    return {**base, "dataset": "l1000_cmapr_level5", "models": ctx_models}


def collect(res: Path, part: str) -> dict:
    if part == "glioma":
        board = pd.read_csv(res / "leaderboard.csv").set_index("model")
        board = board.rename(columns={"overlap_at_N": "DES", "discrimination_score_l1": "PDS", "mae": "MAE",
                                      "precision_at_50_delta": "precision50_delta"})
        scores = {m: {k: float(board.loc[m, k]) for k in GLIOMA_METRICS} for m in board.index}
        real_de = pd.read_csv(res / "stage3" / board.index[0] / "real_de.csv")
        sig = real_de[real_de["fdr"] < 0.05].groupby("target").size()
        targets = sorted(set(real_de["target"]))
        signal = {"heldout_perturbations": len(targets),
                  "sig_de_median": float(np.median([sig.get(t, 0) for t in targets])) if targets else 0.0}
    else:
        board = pd.read_csv(res / "signature_leaderboard.csv").set_index("model")
        scores = {m: {k: float(board.loc[m, k]) for k in L1000_METRICS} for m in board.index}
        signal = {"heldout_signatures": int(board["n_signatures"].iloc[0])}
    logs = {m: json.loads((res / "stage2" / m / "train_log.json").read_text()) for m in board.index}
    gate = {m: lg["gate"]["mean"] for m, lg in logs.items() if (lg.get("gate") or None)}
    zs = json.loads((res / "stage1" / "zscores.json").read_text())
    signal["median_abs_z_train"] = zs["median_abs_z"]
    return {"scores": scores, "gate_mean": gate, "signal": signal}


def run_part(part: str, wd: Path, seeds: list[int], ckpt: Path, rerun: bool, only: list[str] | None = None) -> dict:
    lines = [x for x in (GLIOMA_LINES if part == "glioma" else L1000_LINES) if not only or x in only]
    runs = {}
    for line in lines:
        for seed in seeds:
            cfg = configs(part, line, seed, ckpt)
            d = wd / part / f"{line}_seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            res = d / "results" / cfg["dataset"]
            done = (res / ("leaderboard.csv" if part == "glioma" else "signature_leaderboard.csv")).exists()
            if rerun or not done:
                proc = run_all(d, cfg)
                if proc.returncode != 0:
                    runs[f"{line}/{seed}"] = {"error": proc.stderr[-3000:]}
                    print(f"{part} {line} seed {seed}: FAILED", file=sys.stderr)
                    continue
            runs[f"{line}/{seed}"] = collect(res, part)
            print(f"{part} {line} seed {seed}: done", file=sys.stderr)
    return runs


def summarise(runs: dict, metrics: tuple[str, ...], seeds: list[int]) -> dict:
    ok = {k: r for k, r in runs.items() if "scores" in r}
    models = sorted({m for r in ok.values() for m in r["scores"]})
    table = {}
    for m in models:
        row = {}
        for k in metrics:
            vals = [r["scores"][m][k] for r in ok.values() if m in r["scores"]]
            per_seed = [np.mean([r["scores"][m][k] for key, r in ok.items() if key.endswith(f"/{s}")])
                        for s in seeds if any(key.endswith(f"/{s}") for key in ok)]
            row[k] = {"mean": round(float(np.mean(vals)), 4), "sd_over_seeds": round(float(np.std(per_seed)), 4)}
        for ref in ("context_mean", "ctxfusion_concat"):
            if ref in models and m != ref:
                d = [r["scores"][m][metrics[0]] - r["scores"][ref][metrics[0]] for r in ok.values()]
                p = "precision50_delta" if "precision50_delta" in metrics else "precision@50"
                d50 = [r["scores"][m][p] - r["scores"][ref][p] for r in ok.values()]
                row[f"vs_{ref}"] = {f"d_{metrics[0]}": round(float(np.mean(d)), 4),
                                    f"wins_{metrics[0]}": f"{sum(x > 0 for x in d)}/{len(d)}",
                                    f"d_{p}": round(float(np.mean(d50)), 4),
                                    f"wins_{p}": f"{sum(x > 0 for x in d50)}/{len(d50)}"}
        table[m] = row
    per_context = {}
    for key, r in ok.items():
        line = key.split("/")[0]
        for m, s in r["scores"].items():
            per_context.setdefault(line, {}).setdefault(m, []).append(s[metrics[0]])
    per_context = {c: {m: round(float(np.mean(v)), 4) for m, v in d.items()} for c, d in per_context.items()}
    gates = [g for r in ok.values() for g in r["gate_mean"].values()]
    return {"table": table, "per_context_mean_over_seeds": per_context, "failed": sorted(set(runs) - set(ok)),
            "gate_mean_range": [round(min(gates), 3), round(max(gates), 3)] if gates else None,
            "signal": {k: r["signal"] for k, r in ok.items()}}


def markdown(part: str, summary: dict, metrics: tuple[str, ...]) -> str:
    lines = [f"### {part}", "", "| model | " + " | ".join(metrics) + " | Δ vs context_mean (wins) | Δ vs concat (wins) |",
             "|---" * (len(metrics) + 3) + "|"]
    key = metrics[0]
    p = "precision50_delta" if "precision50_delta" in metrics else "precision@50"
    order = sorted(summary["table"], key=lambda m: -summary["table"][m][key]["mean"])
    for m in order:
        row = summary["table"][m]
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['sd_over_seeds']:.4f}" for k in metrics]
        vs = []
        for ref in ("context_mean", "ctxfusion_concat"):
            v = row.get(f"vs_{ref}")
            vs.append(f"{key} {v[f'd_{key}']:+.4f} ({v[f'wins_{key}']}), {p} {v[f'd_{p}']:+.4f} ({v[f'wins_{p}']})"
                      if v else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " | " + " | ".join(vs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["glioma", "l1000"], choices=["glioma", "l1000"])
    ap.add_argument("--contexts", nargs="+", default=None, help="only these held-out contexts (a quick look)")
    ap.add_argument("--no-rerun", action="store_true", help="collect finished runs instead of running them again")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_ctx.json")
    args = ap.parse_args()
    wd = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ctx_"))
    wd.mkdir(parents=True, exist_ok=True)
    from pertpipe.data.l1000 import landmark_symbols, read_gct_rdata
    from pertpipe.models.scgpt import write_tiny_checkpoint

    ckpt = wd / "scgpt_random_init"
    if not (ckpt / "best_model.pt").exists():  # the landmark genes' vocabulary; glioma genes join it
        g = read_gct_rdata(SHARED / "l1000" / "cmapR" / "ds.RData")
        genes = landmark_symbols(g.row_meta, path="ds")[1]
        import anndata as ad

        genes += [str(x) for x in ad.read_h5ad(SHARED / "perturbench" / "devel.h5ad", backed="r").var_names]
        write_tiny_checkpoint(ckpt, sorted(set(genes)), embsize=32, nheads=4, d_hid=64, nlayers=2, n_bins=51)
    out = {"workdir": str(wd), "seeds": args.seeds, "parts": {}}
    md = []
    for part in args.parts:
        runs = run_part(part, wd, args.seeds, ckpt, not args.no_rerun, args.contexts)
        metrics = GLIOMA_METRICS if part == "glioma" else L1000_METRICS
        summary = summarise(runs, metrics, args.seeds)
        out["parts"][part] = {"summary": summary, "runs": runs}
        md.append(markdown(part, summary, metrics))
    (wd / "bench_ctx.json").write_text(json.dumps(out, indent=1))
    (wd / "bench_ctx.md").write_text("\n".join(md))
    print(json.dumps({p: v["summary"] for p, v in out["parts"].items()}, indent=1))
    print("\n".join(md))
    from results import save_if_asked

    save_if_asked(args, "bench_ctx", {"seeds": args.seeds, "summary": {p: v["summary"] for p, v in out["parts"].items()},
                                      "markdown": "\n".join(md)})


if __name__ == "__main__":
    main()
