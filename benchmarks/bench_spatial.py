"""Spatial branch benchmark: LR imputation on the three real spatial + scRNA pairs, 3 seeds, through the pipeline.

Every run is `snakemake spatial` on one pair with one seed (the original spacexr files through the mirror): k-fold
held-out LR genes (the genes the slide measures and the scRNA-seq expresses; 5 folds, run two at a time), lrimpute,
its default ablations (no expression regression, no residual transfer, no spatial smoothing, no offset, no depth
step) and the baselines (kNN mean, depth alone, HVG autoencoder, SpaGE, Tangram, gimVI).
Reported per pair and method: median over held-out genes of PCC / SSIM / RMSE / JS and the accuracy score, as
mean +- sd over seeds; paired differences lrimpute - method per seed (median PCC) with the number of seeds where
lrimpute is ahead and the per-gene wins; communication recovery before/after imputation; seconds per rule.

    python benchmarks/bench_spatial.py [--workdir DIR] [--seeds 0 1 2] [--pairs lymph_node_visium ...]
                                       [--resource liana] [--no-rerun]

Prints JSON (and writes DIR/bench_spatial.json and DIR/bench_spatial.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from _pipeline import run_all  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PAIRS = ["lymph_node_visium", "hypothalamus_merfish", "hippocampus_visium"]
METRICS = ("pcc", "ssim", "rmse", "js", "as")


def rule_seconds(res: Path) -> dict[str, float]:
    out = {}
    for f in sorted((res / "benchmarks").glob("spatial_*.tsv")):
        out[f.stem.replace("spatial_", "")] = float(pd.read_csv(f, sep="\t")["s"].iloc[0])
    return out


def collect(res: Path) -> dict:
    sp = res / "spatial"
    ev = json.loads((sp / "evaluation/evaluation.json").read_text())
    lr = json.loads((sp / "lr_genes.json").read_text())
    knn = json.loads((sp / "knn_labels.json").read_text())
    comm = json.loads((sp / "communication.json").read_text())
    pri = json.loads((sp / "priors.json").read_text())
    per_gene = pd.read_csv(sp / "evaluation/per_gene.csv")
    pg = per_gene.pivot_table(index="gene", columns="method", values="pcc")
    npz = np.load(sp / "priors.npz")
    genes = [str(g) for g in npz["genes"]]
    with_edges = {g for g, d in zip(genes, np.diag(npz["laplacian"])) if d > 0}
    with_targets = {str(g) for g, row in zip(npz["ligands"], npz["prior"]) if row.sum() > 0}
    where = {}  # the priors' effect on the held-out genes they can reach
    for name, ablation, reach in (("ppi", "lrimpute_no_ppi", with_edges), ("ligand_target", "lrimpute_no_lt", with_targets)):
        if ablation in pg:
            d = (pg["lrimpute"] - pg[ablation])[[g for g in pg.index if g in reach]]
            where[name] = {"n_genes": int(len(d)), "mean_pcc_delta": float(d.mean()) if len(d) else None,
                           "genes_better": int((d > 0).sum()), "genes_worse": int((d < 0).sum())}
    return {"prior_reach": where,"summary": ev["summary"], "lrimpute_vs": ev["lrimpute_vs"], "unavailable": ev["unavailable"],
            "n_heldout_genes": ev["n_heldout_genes"], "n_lr_genes": lr["n_lr_genes_expressed"],
            "n_measured": len(lr["measured_in_spatial"]), "k": knn.get("k"), "ppi_edges": pri.get("ppi_edges"),
            "ligands_with_targets": (pri.get("ligand_target_built") or {}).get("n_ligands_with_targets"),
            "communication": comm, "seconds": rule_seconds(res),
            "per_gene_pcc": per_gene.pivot_table(index="gene", columns="method", values="pcc").to_dict()}


def paired_ci(runs: dict[int, dict], method: str, *, n_boot: int = 2000, seed: int = 0) -> list[float] | None:
    """95% bootstrap interval of (median PCC of lrimpute - median PCC of ``method``) over the held-out genes, each
    gene's PCC averaged over the seeds first (the genes are the same in every seed; the folds differ)."""
    frames = [pd.DataFrame(runs[s]["per_gene_pcc"]) for s in sorted(runs)]
    if any(method not in f or "lrimpute" not in f for f in frames):
        return None
    a = np.mean([f["lrimpute"].sort_index().to_numpy() for f in frames], 0)
    b = np.mean([f[method].sort_index().to_numpy() for f in frames], 0)
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    d = np.median(a[idx], 1) - np.median(b[idx], 1)
    return [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]


def aggregate(runs: dict[int, dict]) -> dict:
    seeds = sorted(runs)
    methods = sorted({m for r in runs.values() for m in r["summary"]})
    table = {}
    for m in methods:
        row = {}
        for metric in METRICS:
            vals = [runs[s]["summary"][m][metric] for s in seeds if m in runs[s]["summary"]]
            row[metric] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}
        if m != "lrimpute":
            d = [runs[s]["summary"]["lrimpute"]["pcc"] - runs[s]["summary"][m]["pcc"] for s in seeds
                 if m in runs[s]["summary"]]
            wins = [runs[s]["lrimpute_vs"][m]["genes_lrimpute_better"] for s in seeds if m in runs[s]["lrimpute_vs"]]
            n = [runs[s]["lrimpute_vs"][m]["n_genes"] for s in seeds if m in runs[s]["lrimpute_vs"]]
            row["lrimpute_minus"] = {"median_pcc_delta_mean": float(np.mean(d)), "seeds_lrimpute_ahead": int(sum(x > 0 for x in d)),
                                     "seeds": len(d), "gene_wins": f"{sum(wins)}/{sum(n)}",
                                     "ci95_gene_bootstrap": paired_ci(runs, m)}
        table[m] = row
    first = runs[seeds[0]]
    comm = {w: {k: float(np.mean([runs[s]["communication"][w][k] for s in seeds]))
                for k in runs[seeds[0]]["communication"][w]} for w in ("before", "after")}
    return {"methods": table, "n_heldout_genes": first["n_heldout_genes"], "n_lr_genes": first["n_lr_genes"],
            "n_measured": first["n_measured"], "k": [runs[s]["k"] for s in seeds], "ppi_edges": first["ppi_edges"],
            "ligands_with_targets": first["ligands_with_targets"], "communication": comm,
            "prior_reach": {k: {"n_genes": runs[seeds[0]]["prior_reach"][k]["n_genes"],
                                "mean_pcc_delta": float(np.mean([runs[s]["prior_reach"][k]["mean_pcc_delta"] or 0 for s in seeds])),
                                "genes_better": int(sum(runs[s]["prior_reach"][k]["genes_better"] for s in seeds)),
                                "genes_worse": int(sum(runs[s]["prior_reach"][k]["genes_worse"] for s in seeds))}
                            for k in runs[seeds[0]]["prior_reach"]},
            "unavailable": first["unavailable"],
            "seconds_per_run": float(np.mean([sum(runs[s]["seconds"].values()) for s in seeds])),
            "seconds_per_rule": {k: float(np.mean([runs[s]["seconds"].get(k, 0) for s in seeds]))
                                 for k in first["seconds"]}}


def versus(agg: dict, method: str) -> str:
    d = agg["methods"][method]["lrimpute_minus"]
    ci = d.get("ci95_gene_bootstrap")
    return (f"lrimpute - {method} = {d['median_pcc_delta_mean']:+.4f} ("
            + (f"95% CI over genes {ci[0]:+.4f} to {ci[1]:+.4f}; " if ci else "")
            + f"ahead in {d['seeds_lrimpute_ahead']}/{d['seeds']} seeds).")


def markdown(out: dict) -> str:
    lines = []
    for pair, agg in out["pairs"].items():
        lines += [f"### {pair}: {agg['n_heldout_genes']} held-out LR genes of {agg['n_lr_genes']} imputed "
                  f"(k = {agg['k']}, {agg['ppi_edges']} PPI edges, {agg['ligands_with_targets']} ligands with targets)",
                  "", "| method | PCC | SSIM | RMSE | JS | AS | lrimpute - method, median PCC [95% CI] (seeds ahead; "
                  "gene wins) |",
                  "|---|---|---|---|---|---|---|"]
        order = sorted(agg["methods"], key=lambda m: -agg["methods"][m]["pcc"]["mean"])
        for m in order:
            r = agg["methods"][m]
            cells = [f"{r[k]['mean']:.4f} ± {r[k]['sd']:.4f}" if k == "pcc" else f"{r[k]['mean']:.4f}" for k in METRICS]
            d = r.get("lrimpute_minus")
            ci = (d or {}).get("ci95_gene_bootstrap")
            tail = (f"{d['median_pcc_delta_mean']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
                    + f" ({d['seeds_lrimpute_ahead']}/{d['seeds']}; {d['gene_wins']})" if d else "—")
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {tail} |")
        base = [m for m in order if not m.startswith("lrimpute")]
        if base and "lrimpute" in agg["methods"]:  # the headline: lrimpute against the strongest baseline
            best, lr = base[0], agg["methods"]["lrimpute"]
            d = agg["methods"][best]["lrimpute_minus"]
            lines.append(f"\nStrongest baseline by PCC: **{best}**; " + versus(agg, best))
            if best == "depth_only" and len(base) > 1:  # the strongest method that imputes expression, too
                lines.append(f"Strongest imputation method: **{base[1]}**; " + versus(agg, base[1]))
            for k, pick in (("ssim", max), ("rmse", min)):  # SSIM higher, RMSE lower is better
                top = pick(base, key=lambda b, k=k: agg["methods"][b][k]["mean"])
                mine, theirs = lr[k]["mean"], agg["methods"][top][k]["mean"]
                lines.append(f"{k.upper()}: lrimpute {mine:.4f} vs the best baseline {top} {theirs:.4f} "
                             f"({'ahead' if pick(mine, theirs) == mine and mine != theirs else 'not ahead'}).")
        for k, r in agg["prior_reach"].items():
            if r["n_genes"]:
                lines.append(f"\n{k} prior on the {r['n_genes']} held-out genes it reaches: mean PCC change "
                             f"{r['mean_pcc_delta']:+.4f} (better on {r['genes_better']}, worse on {r['genes_worse']} "
                             "gene x seed)")
        c = agg["communication"]
        lines += ["", f"Communication: pairs scored {c['before']['n_pairs_scored']:.0f} -> {c['after']['n_pairs_scored']:.0f}; "
                  f"Spearman vs scRNA expectation {c['before']['spearman_vs_expected']:.3f} -> "
                  f"{c['after']['spearman_vs_expected']:.3f}; {agg['seconds_per_run']:.0f} s per run", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pairs", nargs="+", default=PAIRS)
    ap.add_argument("--resource", default="liana")
    ap.add_argument("--no-rerun", action="store_true", help="reuse finished runs in --workdir")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_spatial.json")
    args = ap.parse_args()
    wd = args.workdir or Path(tempfile.mkdtemp(prefix="bench_spatial_"))
    out = {"seeds": args.seeds, "resource": args.resource, "pairs": {}, "wall_seconds": {}}
    previous = wd / "bench_spatial.json"
    if args.no_rerun and previous.exists():  # reused runs keep the wall time they were measured with
        out["wall_seconds"] = dict(json.loads(previous.read_text()).get("wall_seconds") or {})
    for pair in args.pairs:
        runs = {}
        for seed in args.seeds:
            run_dir = wd / f"{pair}_s{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            done = run_dir / "results" / pair / "spatial" / "spatial_report.json"
            if not (args.no_rerun and done.exists()):
                cfg = {"seed": seed, "mirror": str(SHARED), "lock_file": None,
                       "spatial": {"datasets": [pair], "lr_resource": args.resource}}
                t = time.time()
                proc = run_all(run_dir, cfg, target="spatial")
                out["wall_seconds"][f"{pair}_s{seed}"] = round(time.time() - t, 1)
                if proc.returncode != 0:
                    raise SystemExit(f"{pair} seed {seed} failed:\n{proc.stderr[-4000:]}")
            runs[seed] = collect(run_dir / "results" / pair)
            print(f"{pair} seed {seed}: lrimpute median PCC {runs[seed]['summary']['lrimpute']['pcc']:.4f}",
                  file=sys.stderr)
        out["pairs"][pair] = aggregate(runs)
    (wd / "bench_spatial.json").write_text(json.dumps(out, indent=1))
    (wd / "bench_spatial.md").write_text(markdown(out))
    print(json.dumps(out, indent=1))
    print(markdown(out), file=sys.stderr)
    from results import save_if_asked

    save_if_asked(args, "bench_spatial", {**out, "markdown": markdown(out)})


if __name__ == "__main__":
    main()
