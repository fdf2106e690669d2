"""Rule align_genes: reorder/fill genes to the universe (alias rescue via NCBI gene_info), chunk by chunk."""
from pertpipe.data.genes import align_genes, load_alias_map, load_universe
from pertpipe.core.h5io import read_uns, read_var
from pertpipe.io import carry_provenance, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "align_genes", job=sm) as log:
    cfg = sm.params.universe
    if sm.input.universe:
        universe = load_universe(sm.input.universe)
    else:  # kind: source
        universe = [str(g) for g in read_var(sm.input.h5ad).index]
    aliases, alias_stats = ({}, {})
    if sm.input.gene_info:
        aliases, alias_stats = load_alias_map(sm.input.gene_info, universe)
    uns = carry_provenance(read_uns(sm.input.h5ad), "align_genes", params=dict(cfg))
    summary = align_genes(sm.input.h5ad, sm.output.h5ad, universe=universe, aliases=aliases,
                          chunk_size=sm.params.chunk_size, min_source_matched=cfg["min_source_matched"],
                          min_universe_matched=cfg["min_universe_matched"], uns=uns)
    summary.update(universe_kind=cfg["kind"] if sm.input.universe else "source",
                   universe_file=str(sm.input.universe or "source genes"), universe_note=sm.params.universe_note,
                   **alias_stats)
    write_json(summary, sm.output.summary)
    log.info("matched %d, rescued %d, filled %d, dropped %d", summary["matched"], summary["rescued_by_alias"],
             summary["filled_with_zeros"], summary["dropped"])
