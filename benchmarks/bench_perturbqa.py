"""PerturbQA benchmark: the labels models on K562, RPE1 and HepG2 against the baselines and the published table.

Stage 1 and the knowledge stage run through the pipeline (`snakemake knowledge` on ``perturbqa_lines``: the real
files through the mirror, GO facets x MiniLM for every perturbation and readout gene); the models then train and
predict in this process on splits made by the pipeline's own functions, and are scored by the pipeline's scorer
(PerturbQA's ``auc_per_gene``):

* the given split, ``--seeds`` training seeds; and ``--resplits`` seeded re-splits of the training + test
  perturbations (random_unseen, 25 % held out), trained with seed 0;
* leave one line out (``--lolo``): the held-out line's given test perturbations, every other line's rows (and the
  held-out line's training rows) train; ``xctx_rate`` is the bar there.

Reported: mean ± sd over seeds (or re-splits); paired Δ of each model against ``knowledge_knn`` and
``knowledge_ridge`` per readout gene (the AUC difference on genes both score, averaged over seeds) with a 95 %
bootstrap CI over genes; train time. Every setting was chosen on validation shares of the training perturbations
(the models choose k, α, the epoch themselves); the test split is only scored here.

The PerturbQA files are under the Genentech Non-Commercial Software License 1.0: read from ../shared/data here.

    python benchmarks/bench_perturbqa.py --save            # the default run (~50 min on 2 cores)
    python benchmarks/bench_perturbqa.py --lines jurkat     # the untuned check, where the Jurkat files can be fetched
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
sys.path.insert(0, str(REPO / "benchmarks"))

from _pipeline import run_all  # noqa: E402

BASES = ("knowledge_knn", "knowledge_ridge")


def prepare(wd: Path, lines: list[str], shared: Path) -> tuple[Path, Path]:
    """Stage 1 + knowledge of the union of ``lines`` through the pipeline -> (labels.h5ad, facet_embeddings.pt)."""
    name = "perturbqa_lines"
    cfg = {"dataset": name, "mirror": str(shared), "downloads": str(wd / "downloads"), "models": ["dygenept"],
           "stage1": {"split": {"strategy": "given"}},
           "datasets": {}, "knowledge": {"cache_dir": str(REPO / "resources" / "cache")}}
    if lines != ["k562", "rpe1", "hepg2"]:
        name = "bench_lines"
        reg = wd / "registry.yaml"
        import yaml

        base = yaml.safe_load((REPO / "resources" / "datasets.yaml").read_text())
        base["datasets"][name] = {**base["datasets"]["perturbqa_lines"], "adapter_options": {"lines": lines}}
        reg.write_text(yaml.safe_dump(base))
        cfg.update(dataset=name, registry=str(reg))
    proc = run_all(wd, cfg, target="knowledge")
    if proc.returncode != 0:
        raise SystemExit(f"the pipeline failed:\n{proc.stderr[-4000:]}")
    res = wd / "results" / name
    return res / "stage1" / "labels.h5ad", res / "knowledge" / "facet_embeddings.pt"


def write_rows(adata, mask: np.ndarray, path: Path) -> None:
    from pertpipe.data.labels import write_labels

    write_labels(adata[mask].copy(), path)


def run_model(name: str, seed: int, train_path: Path, test, kn_path: Path) -> dict:
    from pertpipe.evaluation.labels import score_labels
    from pertpipe.models import build_model
    from pertpipe.models.inputs import ModelInputs

    import anndata as ad

    m = build_model(name, {}, seed=seed)
    t0 = time.perf_counter()
    log = m.fit(ModelInputs(train=train_path, knowledge=kn_path, threads=2))
    train_s = time.perf_counter() - t0
    de, dr = m.predict_labels(test.obs["target_gene"].astype(str).to_numpy(),
                              test.obs["cell_type"].astype(str).to_numpy())
    pred = ad.AnnData(X=de.astype(np.float32), obs=pd.DataFrame(index=test.obs_names),
                      var=pd.DataFrame(index=m.genes), layers={"dir": dr.astype(np.float32)})
    table, agg = score_labels(test, pred)
    chosen = {k: log[k] for k in ("k", "alpha", "best_epoch") if k in log}
    return {"auc_de": agg["auc_de"], "auc_dir": agg["auc_dir"], "auprc_de": agg["auprc_de"],
            "n_genes_de": agg["n_genes_de"], "n_genes_dir": agg["n_genes_dir"], "train_s": round(train_s, 1),
            "chosen": chosen, "per_gene": table.set_index("gene")[["auc_de", "auc_dir"]]}


def paired(runs: list[dict], base: list[dict], col: str, rng: np.random.Generator, n_boot: int = 2000) -> dict:
    """Δ AUC per readout gene (model - baseline), averaged over the paired runs; 95 % bootstrap CI over genes."""
    diffs = []
    for r, b in zip(runs, base):
        j = r["per_gene"][col].dropna().index.intersection(b["per_gene"][col].dropna().index)
        diffs.append((r["per_gene"].loc[j, col] - b["per_gene"].loc[j, col]).rename(len(diffs)))
    d = pd.concat(diffs, axis=1).mean(axis=1).to_numpy()
    boots = rng.choice(d, size=(n_boot, len(d))).mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"delta": round(float(d.mean()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
            "genes": int(len(d)), "standing": "better" if lo > 0 else ("worse" if hi < 0 else "tie")}


def summarise(setting: str, line: str, runs: dict[str, list[dict]], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for m, rs in runs.items():
        row = {"setting": setting, "line": line, "model": m, "runs": len(rs)}
        for c in ("auc_de", "auc_dir", "auprc_de"):
            v = np.array([r[c] for r in rs], dtype=float)
            row[c] = round(float(v.mean()), 4)
            row[f"{c}_sd"] = round(float(v.std(ddof=1)), 4) if len(v) > 1 else None
        row["train_s"] = round(float(np.mean([r["train_s"] for r in rs])), 1)
        row["chosen"] = [r["chosen"] for r in rs]
        for b in BASES + ("xctx_rate",):
            if b in runs and b != m:
                row[f"vs_{b}"] = {c: paired(rs, runs[b], c, rng) for c in ("auc_de", "auc_dir")}
        rows.append(row)
    return rows


def markdown(rows: list[dict], published: pd.DataFrame, meta_note: str | None) -> str:
    out = ["PerturbQA (Wu et al. 2025; Genentech Non-Commercial licence): AUC per readout gene over the test "
           "perturbations (`auc_per_gene`), mean ± sd over runs. Δ: paired per gene against the baseline, averaged over "
           "runs, 95 % bootstrap CI over genes. Settings chosen on validation shares of the training perturbations.", ""]
    if meta_note:
        out += [meta_note, ""]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        out += [f"### {setting}", "", "| line | model | auc_de | auc_dir | auprc_de | Δ de vs knn | Δ de vs ridge | "
                "Δ dir vs knn | Δ dir vs ridge | Δ de vs xctx_rate | train s |", "|" + "---|" * 11]
        for r in (r for r in rows if r["setting"] == setting):
            def d(b: str, c: str) -> str:
                v = (r.get(f"vs_{b}") or {}).get(c)
                return "" if v is None else f"{v['delta']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}] {v['standing']}"

            def pm(c: str) -> str:
                return f"{r[c]:.4f}" + (f" ± {r[c + '_sd']:.4f}" if r.get(c + "_sd") is not None else "")
            out.append(f"| {r['line']} | {r['model']} | {pm('auc_de')} | {pm('auc_dir')} | {pm('auprc_de')} | "
                       f"{d('knowledge_knn', 'auc_de')} | {d('knowledge_ridge', 'auc_de')} | "
                       f"{d('knowledge_knn', 'auc_dir')} | {d('knowledge_ridge', 'auc_dir')} | "
                       f"{d('xctx_rate', 'auc_de')} | {r['train_s']} |")
        out.append("")
    out += ["### Published (Wu et al. 2025, Table 1; the given split)", "", "| line | model | auc_de | auc_dir |",
            "|---|---|---|---|"]
    out += [f"| {r.line} | {r.model} | {r.auc_de:.2f} | {r.auc_dir:.2f} |" for r in published.itertuples()]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", default="k562,rpe1,hepg2")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--resplits", type=int, default=3)
    ap.add_argument("--models", default="knowledge_knn,knowledge_ridge,dygenept")
    ap.add_argument("--lolo", action="store_true", help="also leave one line out")
    ap.add_argument("--lolo-models", default="xctx_rate,knowledge_ridge,ctxfusion")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_perturbqa.json")
    ap.add_argument("--note", default=None)
    args = ap.parse_args()
    import anndata as ad

    from pertpipe.data.labels import split_labels
    from pertpipe.evaluation.labels import published_rows

    shared = REPO.parent / "shared" / "data"
    lines = args.lines.split(",")
    wd = Path(args.workdir or tempfile.mkdtemp(prefix="bench_perturbqa_"))
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    labels_path, kn_path = prepare(wd, lines, shared)
    print(f"stage 1 + knowledge: {time.perf_counter() - t0:.0f} s ({wd})", flush=True)
    full = ad.read_h5ad(labels_path)
    models = args.models.split(",")
    rows: list[dict] = []
    for line in lines:
        one = full[full.obs["cell_type"] == line].copy()
        runs: dict[str, list[dict]] = {m: [] for m in models}
        split, _ = split_labels(one.obs, strategy="given", seed=0)
        write_rows(one, split == "train", wd / f"{line}_given_train.h5ad")
        test = one[split == "test"].copy()
        for seed in args.seeds:
            for m in models:
                runs[m].append(run_model(m, seed, wd / f"{line}_given_train.h5ad", test, kn_path))
                print(line, "given", seed, m, {k: runs[m][-1][k] for k in ("auc_de", "auc_dir", "train_s")}, flush=True)
        rows += summarise("given split, 3 training seeds", line, runs, 0)
        if args.resplits:
            runs = {m: [] for m in models}
            for s in range(args.resplits):
                split, _ = split_labels(one.obs, strategy="random_unseen", seed=100 + s, fraction=0.25)
                write_rows(one, split == "train", wd / f"{line}_re{s}_train.h5ad")
                test = one[split == "test"].copy()
                for m in models:
                    runs[m].append(run_model(m, 0, wd / f"{line}_re{s}_train.h5ad", test, kn_path))
                    print(line, "resplit", s, m, {k: runs[m][-1][k] for k in ("auc_de", "auc_dir")}, flush=True)
            rows += summarise(f"{args.resplits} seeded re-splits (25 % of perturbations held out)", line, runs, 1)
    if args.lolo and len(lines) > 1:
        lmodels = args.lolo_models.split(",")
        for line in lines:
            runs = {m: [] for m in lmodels}
            split, rec = split_labels(full.obs, strategy="cell_line_holdout", seed=0, holdout=line)
            write_rows(full, split == "train", wd / f"lolo_{line}_train.h5ad")
            test = full[split == "test"].copy()
            for seed in args.seeds:
                for m in lmodels:
                    runs[m].append(run_model(m, seed, wd / f"lolo_{line}_train.h5ad", test, kn_path))
                    print(line, "lolo", seed, m, {k: runs[m][-1][k] for k in ("auc_de", "auc_dir", "train_s")},
                          flush=True)
            new = summarise("leave one line out (test: the held-out line's test perturbations)", line, runs, 2)
            for r in new:
                r["test_measured_elsewhere"] = f"{rec['test_in_other_lines']}/{rec['perturbations']['test']}"
            rows += new
    rows = [{k: v for k, v in r.items()} for r in rows]
    for r in rows:
        print(json.dumps({k: r[k] for k in ("setting", "line", "model", "auc_de", "auc_dir")}))
    pub = published_rows()
    pub = pub[pub["line"].isin(lines)]
    result = {"lines": lines, "seeds": args.seeds, "resplits": args.resplits, "rows": rows,
              "wall_s": round(time.perf_counter() - t0, 1), "markdown": markdown(rows, pub, args.note)}
    print(result["markdown"])
    if args.save:
        from results import write

        print("wrote", write("bench_perturbqa", result, [sys.executable, *sys.argv]))


if __name__ == "__main__":
    main()
