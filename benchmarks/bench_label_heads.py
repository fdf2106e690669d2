"""Choosing ctxfusion's fusion head on the labels task (PerturbQA, given + other lines) on validation data only.

For each line: its leave-one-line-out training rows (the line's given training rows and every other line's rows, as
``bench_perturbqa.py --settings lolo`` trains on), less a validation share of 15 % of the line's *training*
perturbations (their rows in the other lines stay, as a test perturbation's do). ctxfusion builds its features on the
rest once (the cross-fitted knowledge ridge, the transfer ridge, the other lines' labels and DE rates); each head
(``label_fusion``: sum, gated, mlp) is then fitted on the same features and scored on the validation rows (mean AUC
per readout gene, DE and direction). The test perturbations are never read.

    python benchmarks/bench_label_heads.py --seeds 0 1 --save     # ~30 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_perturbqa import prepare  # noqa: E402

HEADS = ("sum", "gated", "mlp")


def validate(labels_path: Path, kn_path: Path, line: str, seed: int) -> dict:
    import anndata as ad

    from pertpipe.data.labels import LabelData, split_labels
    from pertpipe.models import build_model
    from pertpipe.models.label_learner import Knowledge, mean_auc, validation_split

    full = ad.read_h5ad(labels_path)
    split, _ = split_labels(full.obs, strategy="cell_line_holdout", seed=0, holdout=line)
    data = LabelData.from_adata(full[split == "train"])
    own = data.rows(data.lines == line)
    _, is_val = validation_split(own, 0.15, seed)
    val_perts = np.unique(own.perts[is_val])
    va = (data.lines == line) & np.isin(data.perts, val_perts)
    train, val = data.rows(~va), data.rows(va)
    kn = Knowledge.read(kn_path)
    kn.tensor = kn.tensor.astype(np.float16).astype(np.float32)  # as the pipeline fits (model.pt keeps float16)
    m = build_model("ctxfusion", {"label_fusion": HEADS[0], "label_fusion_dir": "same"}, seed=seed)
    learner = m.label_learner(m.params, seed)
    t0 = time.perf_counter()
    learner.fit(train, kn)
    out = {"line": line, "seed": seed, "val_perturbations": int(len(val_perts)), "features_s":
           round(time.perf_counter() - t0, 1), "heads": {}}
    for head in HEADS:
        learner.p.label_fusion = head
        t0 = time.perf_counter()
        if head != HEADS[0]:
            learner._fit_head(learner.batches)
        de, dr = learner.predict(val.perts, val.lines)
        out["heads"][head] = {"auc_de": round(mean_auc(val.de, de), 4), "auc_dir": round(mean_auc(val.dir, dr), 4),
                              "fit_s": round(time.perf_counter() - t0, 1)}
        print(line, seed, head, out["heads"][head], flush=True)
    return out


def markdown(runs: list[dict], note: str | None) -> str:
    out = [note or "", "", "Validation shares of the training perturbations (15 % of each line's), leave one line out; "
           "mean AUC per readout gene. The test perturbations are not read.", "",
           "| line | seed | val perturbations | " + " | ".join(f"{h} DE | {h} dir" for h in HEADS) + " |",
           "|---|---|---|" + "---|---|" * len(HEADS)]
    for r in runs:
        cells = " | ".join(f"{r['heads'][h]['auc_de']:.4f} | {r['heads'][h]['auc_dir']:.4f}" for h in HEADS)
        out.append(f"| {r['line']} | {r['seed']} | {r['val_perturbations']} | {cells} |")
    for k in ("auc_de", "auc_dir"):
        means = {h: float(np.mean([r["heads"][h][k] for r in runs])) for h in HEADS}
        best = max(means, key=means.get)
        out.append("")
        out.append(f"Mean {k} over lines and seeds: " + ", ".join(f"{h} {v:.4f}" for h, v in means.items())
                   + f"; highest: **{best}**.")
    return "\n".join(out).strip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", default="k562,rpe1,hepg2")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--workdir", default=None, help="bench_perturbqa's --workdir (its stage 1 and knowledge are reused)")
    ap.add_argument("--save", action="store_true")
    ap.add_argument("--note", default=None)
    args = ap.parse_args()
    wd = Path(args.workdir or tempfile.mkdtemp(prefix="bench_label_heads_"))
    wd.mkdir(parents=True, exist_ok=True)
    labels_path, kn_path = prepare(wd, ["k562", "rpe1", "hepg2"], REPO.parent / "shared" / "data")
    t0 = time.perf_counter()
    store = wd / "label_heads"  # one file per finished (line, seed): runs in parallel processes share them
    store.mkdir(exist_ok=True)
    runs = []
    for seed in args.seeds:
        for line in args.lines.split(","):
            f = store / f"{line}_{seed}.json"
            if not f.exists():
                f.write_text(json.dumps(validate(labels_path, kn_path, line, seed)))
            runs.append(json.loads(f.read_text()))
    result = {"runs": runs, "heads": list(HEADS), "wall_s": round(time.perf_counter() - t0, 1),
              "markdown": markdown(runs, args.note)}
    print(result["markdown"])
    from results import save_if_asked

    save_if_asked(args, "bench_label_heads", result)


if __name__ == "__main__":
    main()
