"""Rule gene_text: per universe gene, symbol, full name, GO terms by aspect (and NCBI summaries if enabled)."""
from pathlib import Path

from pertpipe.data.genes import load_universe
from pertpipe.io import atomic_path, script_step, write_json
from pertpipe.knowledge.annotations import parse_obo, read_gene2go, read_gene_info
from pertpipe.knowledge.gene_text import build_gene_text, map_symbols
from pertpipe.knowledge.ncbi import fetch_summaries

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "gene_text", job=sm) as log:
    universe = load_universe(sm.input.genes)
    gene_info = read_gene_info(sm.input.gene_info)
    gene2go = read_gene2go(sm.input.gene2go)
    ontology = parse_obo(sm.input.go_obo)
    summaries = None
    cfg = sm.params.summaries
    if cfg["enabled"]:
        ids, _missing = map_symbols(universe, gene_info)
        summaries = fetch_summaries(list(ids.values()), cache_path=Path(sm.params.cache_dir) / "ncbi_summaries.json",
                                    base_url=cfg["base_url"], rate=cfg["rate"], api_key_env=cfg["api_key_env"])
    table, report = build_gene_text(universe, gene_info, gene2go, ontology, summaries=summaries)
    with atomic_path(sm.output.table) as tmp:
        table.to_parquet(tmp, index=False)
    report["summaries"] = bool(cfg["enabled"])
    write_json(report, sm.output.summary)
    log.info("%s", {k: v for k, v in report.items() if k != "absent_examples"})
    if report["absent_from_gene_info"]:
        log.warning("%d universe genes are absent from gene_info (their facets are <NONE>), e.g. %s",
                    report["absent_from_gene_info"], report["absent_examples"][:10])
