"""Knowledge-stage benchmark: GO facets for the whole VCC universe, then MiniLM embeddings on the CPU.

Reads ../shared/data/annotations (NCBI gene_info, gene2go, GO OBO) and ../shared/data/vcc/gene_names.csv,
runs gene text -> GO facets -> facet embeddings (no cache, so every unique text is embedded) and prints
JSON: wall seconds per step, texts/s, unique texts, coverage overall and per facet, peak RSS.

    python benchmarks/bench_knowledge.py [--threads 2] [--batch-size 64] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--limit-genes", type=int, default=None, help="only the first N genes (quick check)")
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/bench_knowledge.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from pertpipe.data.genes import load_universe
    from pertpipe.knowledge.annotations import parse_obo, read_gene2go, read_gene_info
    from pertpipe.knowledge.encode import TextEncoder, facet_tensor
    from pertpipe.knowledge.facets import coverage, go_facets, load_facets
    from pertpipe.knowledge.gene_text import build_gene_text

    torch.set_num_threads(args.threads)
    steps = {}
    t = time.perf_counter()
    a = SHARED / "annotations"
    onto, g2g, gi = parse_obo(a / "go-basic.obo.gz"), read_gene2go(a / "gene2go_human.gz"), read_gene_info(
        a / "Homo_sapiens.gene_info.gz")
    steps["read_annotations_s"] = round(time.perf_counter() - t, 2)
    universe = load_universe(SHARED / "vcc" / "gene_names.csv")[: args.limit_genes]
    t = time.perf_counter()
    text, rep = build_gene_text(universe, gi, g2g, onto)
    steps["gene_text_s"] = round(time.perf_counter() - t, 2)
    facets = load_facets(REPO / "resources" / "facets.yaml", onto)
    t = time.perf_counter()
    table = go_facets(text, onto, facets)
    steps["go_facets_s"] = round(time.perf_counter() - t, 2)
    cov = coverage(table, facets)
    t = time.perf_counter()
    enc = TextEncoder("minilm", device="cpu", max_length=args.max_length)
    steps["load_encoder_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    blob = facet_tensor(table, universe, [f.name for f in facets], enc, batch_size=args.batch_size, cache_dir=None)
    steps["embed_s"] = round(time.perf_counter() - t, 2)
    fig = blob["figures"]
    out = {
        "benchmark": "knowledge: GO facets + MiniLM (CPU)", "genes": len(universe), "threads": args.threads,
        "steps": steps, "total_s": round(sum(steps.values()), 1), "unique_texts": fig["unique_texts"],
        "texts_per_s": fig["texts_per_s"], "tensor_shape": list(blob["tensor"].shape),
        "absent_from_gene_info": rep["absent_from_gene_info"], "genes_with_go_terms": rep["with_go_terms"],
        "coverage": {"genes_with_any_facet": cov["genes_with_any_facet"],
                     "fraction_with_any_facet": cov["fraction_with_any_facet"],
                     "fraction_per_facet": cov["fraction_per_facet"]},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    out["targets"] = {"total<=20min": out["total_s"] <= 1200, "coverage>=0.8": cov["fraction_with_any_facet"] >= 0.8}
    out["markdown"] = markdown(out)
    print(json.dumps(out, indent=2))
    from results import save_if_asked

    save_if_asked(args, "bench_knowledge", out)


def markdown(out: dict) -> str:
    from results import md_table

    cov = out["coverage"]
    rows = [{"step": k.removesuffix("_s"), "seconds": v} for k, v in out["steps"].items()]
    return (f"{out['genes']:,} genes (the VCC universe), {out['threads']} threads: {out['total_s']} s in all, "
            f"{out['unique_texts']:,} unique facet texts at {out['texts_per_s']} texts/s, tensor {out['tensor_shape']}, "
            f"peak RSS {out['peak_rss_mb']} MB; genes with any facet {cov['genes_with_any_facet']:,} "
            f"({cov['fraction_with_any_facet']:.1%}), absent from gene_info {out['absent_from_gene_info']}.\n\n"
            + md_table(rows, ["step", "seconds"]) + "\n"
            + md_table([{"facet": k, "fraction of genes": v} for k, v in cov["fraction_per_facet"].items()],
                       ["facet", "fraction of genes"]))


if __name__ == "__main__":
    main()
