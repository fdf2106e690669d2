"""Rule facets: K facet texts per gene (GO extractor, or an LLM endpoint) + the coverage report."""
import pandas as pd

from pertpipe.errors import ConfigError
from pertpipe.io import atomic_path, script_step, write_json
from pertpipe.knowledge.annotations import parse_obo
from pertpipe.knowledge.facets import coverage, go_facets, load_facets
from pertpipe.knowledge.llm import LLMSettings, llm_facets

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "facets") as log:
    ontology = parse_obo(sm.input.go_obo)
    facets = load_facets(sm.input.facets, ontology)
    gene_text = pd.read_parquet(sm.input.gene_text)
    extra = {}
    if sm.params.extractor == "go":
        table = go_facets(gene_text, ontology, facets, max_chars=sm.params.max_chars)
    else:
        cfg = dict(sm.params.llm)
        if not cfg.get("base_url") or not cfg.get("model"):
            raise ConfigError("knowledge.extractor is 'llm' but knowledge.llm.base_url / model are not set. "
                              "Fix: give the endpoint (e.g. http://127.0.0.1:8000/v1) and the model name")
        settings = LLMSettings(**{k: v for k, v in cfg.items() if k != "prompt"})
        template = open(sm.input.prompt).read()
        table, extra = llm_facets(gene_text, facets, settings, template=template,
                                  cache_dir=f"{sm.params.cache_dir}/llm_facets")
    with atomic_path(sm.output.table) as tmp:
        table.to_parquet(tmp, index=False)
    cov = coverage(table, facets)
    cov.update(extractor=sm.params.extractor, provenance=extra)
    write_json(cov, sm.output.coverage)
    log.info("genes with >= 1 facet: %d/%d (%.1f%%)", cov["genes_with_any_facet"], cov["genes"],
             100 * cov["fraction_with_any_facet"])
