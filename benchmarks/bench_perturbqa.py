"""PerturbQA benchmark: the labels models on K562, RPE1 and HepG2 against the baselines and the published table.

Stage 1 and the knowledge stage run through the pipeline (`snakemake knowledge` on ``perturbqa_lines``: the real
files through the mirror, GO facets x MiniLM for every perturbation and readout gene); the models then train and
predict in this process on splits made by the pipeline's own functions, and are scored by the pipeline's scorer
(PerturbQA's ``auc_per_gene``):

* the given split, ``--seeds`` training seeds; and ``--resplits`` seeded re-splits of the training + test
  perturbations (random_unseen, 25 % held out), trained with seed 0;
* given + other lines (``--lolo``, the setting ``lolo``): the line's given test perturbations, trained on its given
  training rows *and* every other line's rows (254 of K562's 267 test perturbations, 325/406 of RPE1's, 266/278 of
  HepG2's are measured in another line); ``xctx_rate`` (the other lines' labels alone) is the bar there, and the
  rows compare with the in-line-only given-split rows above, not with the paper's table.

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
    import anndata as ad

    from pertpipe.evaluation.labels import score_labels
    from pertpipe.models import build_model
    from pertpipe.models.inputs import ModelInputs

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


def plan_jobs(full, wd: Path, lines: list[str], settings: list[str], models: list[str], args) -> tuple[list, dict]:
    """(setting key, models, seed, train path, test rows) in the order they run (seeds outermost), and the
    leave-one-line-out split records."""
    from pertpipe.data.labels import split_labels

    jobs = []  # (setting key, line, models, seed, train path, test) in the order they run: seeds outermost
    for seed in args.seeds:
        for line in lines:
            if "given" in settings:
                one = full[full.obs["cell_type"] == line].copy()
                split, _ = split_labels(one.obs, strategy="given", seed=0)
                tp = wd / f"{line}_given_train.h5ad"
                if not tp.exists():
                    write_rows(one, split == "train", tp)
                jobs.append((f"given_{line}", models, seed, tp, one[split == "test"].copy()))
    for s_ in range(args.resplits if "resplits" in settings else 0):
        for line in lines:
            one = full[full.obs["cell_type"] == line].copy()
            split, _ = split_labels(one.obs, strategy="random_unseen", seed=100 + s_, fraction=0.25)
            tp = wd / f"{line}_re{s_}_train.h5ad"
            if not tp.exists():
                write_rows(one, split == "train", tp)
            jobs.append((f"resplit{s_}_{line}", models, 0, tp, one[split == "test"].copy()))
    lolo_rec = {}
    if "lolo" in settings and len(lines) > 1:
        for seed in args.seeds:
            for line in (args.lolo_lines.split(",") if args.lolo_lines else lines):
                split, rec = split_labels(full.obs, strategy="cell_line_holdout", seed=0, holdout=line)
                lolo_rec[line] = rec
                tp = wd / f"lolo_{line}_train.h5ad"
                if not tp.exists():
                    write_rows(full, split == "train", tp)
                jobs.append((f"lolo_{line}", args.lolo_models.split(","), seed, tp, full[split == "test"].copy()))
    return jobs, lolo_rec


def collect(store: Path, lines: list[str], settings: list[str], models: list[str], args, lolo_rec: dict
            ) -> list[dict]:
    """The summary rows of every finished run in ``store`` (complete seed sets only)."""
    def load(key: str, ms: list[str], seeds: list[int]) -> dict[str, list[dict]]:
        out = {}
        for m in ms:
            rs = [pd.read_pickle(store / f"{key}__{m}__{sd}.pkl") for sd in seeds
                  if (store / f"{key}__{m}__{sd}.pkl").exists()]
            if rs:
                out[m] = rs
        n = min((len(v) for v in out.values()), default=0)  # pair only complete seed sets
        return {m: v[:n] for m, v in out.items()} if n else {}

    rows: list[dict] = []
    if "given" in settings:
        for line in lines:
            runs = load(f"given_{line}", models, args.seeds)
            if runs:
                rows += summarise(f"given split, {len(next(iter(runs.values())))} training seeds", line, runs, 0)
    if "resplits" in settings and args.resplits:
        for line in lines:
            runs = {m: [r for s_ in range(args.resplits) for r in load(f"resplit{s_}_{line}", [m], [0]).get(m, [])]
                    for m in models}
            runs = {m: v for m, v in runs.items() if v}
            if runs:
                n = min(len(v) for v in runs.values())
                rows += summarise(f"{n} seeded re-splits (25 % of perturbations held out)", line,
                                  {m: v[:n] for m, v in runs.items()}, 1)
    if "lolo" in settings:
        for line in lines:
            runs = load(f"lolo_{line}", args.lolo_models.split(","), args.seeds)
            if not runs:
                continue
            new = summarise("given + other lines (test: the line's given test perturbations; training: its "
                            "training rows and every other line's rows)", line, runs, 2)
            rec = lolo_rec.get(line) or {}
            for r in new:
                r["test_measured_elsewhere"] = f"{rec.get('test_in_other_lines')}/{(rec.get('perturbations') or {}).get('test')}"
            rows += new
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", default="k562,rpe1,hepg2")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--resplits", type=int, default=3)
    ap.add_argument("--models", default="knowledge_knn,knowledge_ridge,dygenept")
    ap.add_argument("--lolo", action="store_true", help="also leave one line out (= adding lolo to --settings)")
    ap.add_argument("--settings", default="given,resplits", help="comma-separated: given, resplits, lolo")
    ap.add_argument("--collect", action="store_true", help="render the finished runs in --workdir, train nothing")
    ap.add_argument("--name", default="bench_perturbqa", help="the results file's name")
    ap.add_argument("--lolo-models", default="xctx_rate,knowledge_ridge,ctxfusion")
    ap.add_argument("--lolo-lines", default=None, help="train the lolo setting for these lines only (every line's rows "
                    "still train): runs in parallel processes share --workdir's runs folder")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_perturbqa.json")
    ap.add_argument("--note", default=None)
    args = ap.parse_args()
    if args.lolo and "lolo" not in args.settings:
        args.settings += ",lolo"
    import anndata as ad

    from pertpipe.evaluation.labels import published_rows

    shared = REPO.parent / "shared" / "data"
    lines = args.lines.split(",")
    wd = Path(args.workdir or tempfile.mkdtemp(prefix="bench_perturbqa_"))
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    labels_path, kn_path = prepare(wd, lines, shared)  # cached by Snakemake on a re-run in the same --workdir
    print(f"stage 1 + knowledge: {time.perf_counter() - t0:.0f} s ({wd})", flush=True)
    full = ad.read_h5ad(labels_path)
    models = args.models.split(",")
    settings = args.settings.split(",")
    store = wd / "runs"  # one file per finished run, so --collect can render whatever has finished
    store.mkdir(exist_ok=True)

    def run(key: str, m: str, seed: int, train_path: Path, test) -> None:
        path = store / f"{key}__{m}__{seed}.pkl"
        if path.exists() or args.collect:
            return
        r = run_model(m, seed, train_path, test, kn_path)
        pd.to_pickle(r, path)
        print(key, seed, m, {k: r[k] for k in ("auc_de", "auc_dir", "train_s")}, flush=True)

    jobs, lolo_rec = plan_jobs(full, wd, lines, settings, models, args)
    for key, ms, seed, tp, test in jobs:
        for m in ms:
            run(key, m, seed, tp, test)

    rows = collect(store, lines, settings, models, args, lolo_rec)
    rows = [{k: v for k, v in r.items()} for r in rows]
    for r in rows:
        print(json.dumps({k: r[k] for k in ("setting", "line", "model", "auc_de", "auc_dir")}))
    pub = published_rows()
    pub = pub[pub["line"].isin(lines)]
    result = {"lines": lines, "seeds": args.seeds, "resplits": args.resplits, "rows": rows,
              "wall_s": round(time.perf_counter() - t0, 1), "markdown": markdown(rows, pub, args.note)}
    print(result["markdown"])
    from results import save_if_asked

    save_if_asked(args, args.name, result, script="bench_perturbqa")


if __name__ == "__main__":
    main()
