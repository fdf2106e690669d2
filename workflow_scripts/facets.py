"""Rule facets: K facet texts per gene (GO extractor, or an LLM endpoint) + the coverage report."""
import pandas as pd

from pertpipe.io import atomic_path, script_step, write_json
from pertpipe.knowledge.annotations import parse_obo
from pertpipe.knowledge.facets import coverage, extract_facets, load_facets

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "facets", job=sm) as log:
    ontology = parse_obo(sm.input.go_obo)
    facets = load_facets(sm.input.facets, ontology)
    table, extra = extract_facets(pd.read_parquet(sm.input.gene_text), ontology, facets,
                                  extractor=sm.params.extractor, max_chars=sm.params.max_chars, llm=sm.params.llm,
                                  prompt_path=sm.input.prompt or None, cache_dir=sm.params.cache_dir)
    with atomic_path(sm.output.table) as tmp:
        table.to_parquet(tmp, index=False)
    cov = coverage(table, facets)
    cov.update(extractor=sm.params.extractor, provenance=extra)
    write_json(cov, sm.output.coverage)
    log.info("genes with >= 1 facet: %d/%d (%.1f%%)", cov["genes_with_any_facet"], cov["genes"],
             100 * cov["fraction_with_any_facet"])
