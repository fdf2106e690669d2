"""Rule knowledge_genes: the readout genes plus every perturbation target outside them (what the knowledge stage
describes on a cells or signatures run)."""
from pertpipe.data.genes import write_knowledge_genes
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "knowledge_genes", job=sm) as log:
    figures = write_knowledge_genes(sm.input.genes, sm.input.train, sm.input.template, sm.output.genes)
    log.info("%s", figures)
