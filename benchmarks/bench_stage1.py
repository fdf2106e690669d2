"""Stage-1 scaling benchmark: chunked standardize + align + split vs the naive in-memory way.

Makes synthetic raw-count h5ad files of N cells x 18,080 genes (~2,000 non-zeros per cell; genes are
the VCC universe when ../shared/data is present, shuffled, with 2% unknown names and 1% missing so
the alignment really reorders and fills), then runs each way in its own process and reports wall
seconds and the process's peak RSS (kernel high-water mark). Prints one JSON document.

    python benchmarks/bench_stage1.py                       # 25,000 and 50,000 cells
    python benchmarks/bench_stage1.py --cells 5000 --skip-naive
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's package (the workers run this file too)
VCC_GENES = REPO.parent / "shared" / "data" / "vcc" / "gene_names.csv"
N_GENES = 18_080


def universe() -> list[str]:
    if VCC_GENES.exists():
        return [g.strip() for g in VCC_GENES.read_text().splitlines() if g.strip()]
    return [f"G{i:05d}" for i in range(N_GENES)]


def make_input(path: Path, n_cells: int, nnz_per_cell: int, seed: int = 0, chunk: int = 5000) -> dict:
    import pandas as pd
    import scipy.sparse as sp

    from pertpipe.core.h5io import H5adWriter

    rng = np.random.default_rng(seed)
    uni = universe()
    genes = list(rng.permutation(uni))
    n_missing = len(genes) // 100
    genes = genes[n_missing:]
    n_unknown = len(uni) // 50
    genes += [f"UNKNOWN{i}" for i in range(n_unknown)]
    n_genes = len(genes)
    targets = rng.choice([g for g in genes if not g.startswith("UNKNOWN")], size=150, replace=False)
    labels = np.where(rng.random(n_cells) < 0.1, "non-targeting", rng.choice(targets, size=n_cells))
    obs = pd.DataFrame({"target_gene": labels, "batch": rng.choice(["b1", "b2", "b3"], size=n_cells)},
                       index=[f"cell{i}" for i in range(n_cells)])
    with H5adWriter(path, obs=obs, var=pd.DataFrame(index=genes)) as w:
        for start in range(0, n_cells, chunk):
            n = min(chunk, n_cells - start)
            cols = np.sort(rng.choice(n_genes, size=(n, nnz_per_cell)), axis=1)
            data = rng.geometric(0.4, size=n * nnz_per_cell).astype(np.float32)
            indptr = np.arange(0, n * nnz_per_cell + 1, nnz_per_cell)
            m = sp.csr_matrix((data, cols.ravel(), indptr), shape=(n, n_genes))
            m.sum_duplicates()
            w.append(m)
    return {"cells": n_cells, "genes": n_genes, "bytes": path.stat().st_size}


def worker_chunked(src: Path, out: Path, chunk_size: int) -> None:
    from pertpipe.core.h5io import read_obs
    from pertpipe.data.adapters import get_adapter
    from pertpipe.data.genes import align_genes
    from pertpipe.data.split import make_split, write_split
    from pertpipe.data.standardize import standardize

    standardize(src, out / "std.h5ad", adapter=get_adapter("vcc"), chunk_size=chunk_size)
    align_genes(out / "std.h5ad", out / "aligned.h5ad", universe=universe(), chunk_size=chunk_size)
    res = make_split(read_obs(out / "aligned.h5ad"), strategy="random_unseen", seed=0, fraction=0.2)
    write_split(out / "aligned.h5ad", out / "train.h5ad", out / "val.h5ad", res, chunk_size=chunk_size)


def worker_naive(src: Path, out: Path) -> None:
    """What a script without stage 1 does: read everything, normalise, `adata[:, genes]`, write subsets."""
    import anndata as ad
    import scanpy as sc

    from pertpipe.core.h5io import read_obs
    from pertpipe.data.split import make_split

    a = ad.read_h5ad(src)
    a.obs["cell_type"] = "H1"
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    uni = universe()
    present = [g for g in uni if g in set(a.var_names)]
    b = a[:, present].copy()  # the usual naive alignment: measured universe genes only, no fill
    b.write_h5ad(out / "aligned.h5ad")
    res = make_split(read_obs(out / "aligned.h5ad"), strategy="random_unseen", seed=0, fraction=0.2)
    b[res.assignment == "train"].write_h5ad(out / "train.h5ad")
    b[res.assignment == "val"].write_h5ad(out / "val.h5ad")


def run_worker(mode: str, src: Path, chunk_size: int) -> dict:
    with tempfile.TemporaryDirectory(dir=src.parent) as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--input", str(src), "--out", out,
                               "--chunk-size", str(chunk_size)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_s"] = round(wall, 2)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, nargs="+", default=[25_000, 50_000])
    ap.add_argument("--nnz-per-cell", type=int, default=2000)
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_stage1.json")
    ap.add_argument("--worker", choices=["chunked", "naive"])
    ap.add_argument("--input")
    ap.add_argument("--out")
    args = ap.parse_args()

    if args.worker:
        t0 = time.perf_counter()
        if args.worker == "chunked":
            worker_chunked(Path(args.input), Path(args.out), args.chunk_size)
        else:
            worker_naive(Path(args.input), Path(args.out))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"inner_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_mb, 1)}))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_stage1_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.cells:
        src = work / f"synthetic_{n}.h5ad"
        t0 = time.perf_counter()
        meta = make_input(src, n, args.nnz_per_cell)
        row = {"cells": n, "genes": meta["genes"], "input_mb": round(meta["bytes"] / 2**20, 1),
               "make_input_s": round(time.perf_counter() - t0, 1),
               "chunked": run_worker("chunked", src, args.chunk_size)}
        if not args.skip_naive:
            row["naive"] = run_worker("naive", src, args.chunk_size)
        rows.append(row)
        src.unlink()
        print(json.dumps(row), file=sys.stderr)
    out = {"benchmark": "stage1 standardize+align_genes+split", "chunk_size": args.chunk_size,
           "nnz_per_cell": args.nnz_per_cell, "cores": os.cpu_count(), "runs": rows}
    if len(rows) >= 2 and all("peak_rss_mb" in r["chunked"] for r in rows):
        out["chunked_rss_ratio_largest_vs_smallest"] = round(rows[-1]["chunked"]["peak_rss_mb"]
                                                             / rows[0]["chunked"]["peak_rss_mb"], 3)
        out["targets"] = {"50k_wall_s<=120": None, "50k_peak_rss_gb<=2.5": None, "rss_ratio<=1.3": None}
        big = next((r for r in rows if r["cells"] == 50_000), None)
        if big:
            out["targets"] = {"50k_wall_s<=120": big["chunked"]["wall_s"] <= 120,
                              "50k_peak_rss_gb<=2.5": big["chunked"]["peak_rss_mb"] / 1024 <= 2.5,
                              "rss_ratio<=1.3": out["chunked_rss_ratio_largest_vs_smallest"] <= 1.3}
    out["markdown"] = markdown(out)
    print(json.dumps(out, indent=2))
    from results import save_if_asked

    save_if_asked(args, "bench_stage1", out)


def markdown(out: dict) -> str:
    """Wall seconds and peak RSS of stage 1 (chunked, and the naive in-memory version) per input size."""
    from results import md_table

    rows = [{"cells": r["cells"], "genes": r["genes"], "input MB": r["input_mb"],
             "chunked wall s": r["chunked"].get("wall_s"), "chunked peak RSS MB": r["chunked"].get("peak_rss_mb"),
             "naive wall s": (r.get("naive") or {}).get("wall_s"),
             "naive peak RSS MB": (r.get("naive") or {}).get("peak_rss_mb")} for r in out["runs"]]
    return (f"standardize + align_genes + split, chunk size {out['chunk_size']}, {out['nnz_per_cell']} non-zero "
            f"entries per cell, {out['cores']} cores; RSS ratio largest / smallest input (chunked): "
            f"{out.get('chunked_rss_ratio_largest_vs_smallest')}.\n\n"
            + md_table(rows, ["cells", "genes", "input MB", "chunked wall s", "chunked peak RSS MB", "naive wall s",
                              "naive peak RSS MB"]))


if __name__ == "__main__":
    main()
