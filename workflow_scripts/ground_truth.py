"""Rule ground_truth: truth h5ad, pseudobulk parquet, gene order and the prediction template."""
from pertpipe.core.h5io import read_uns
from pertpipe.data.pseudobulk import write_ground_truth
from pertpipe.data.split import write_template_files
from pertpipe.integrity import RECORD_KEY, record
from pertpipe.io import read_json, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "ground_truth", job=sm) as log:
    split = read_json(sm.input.split)
    uns = read_uns(sm.input.val)
    figures = write_ground_truth(sm.input.val, truth_path=sm.output.truth, pseudobulk_path=sm.output.pseudobulk,
                                 genes_path=sm.output.genes, chunk_size=sm.params.chunk_size,
                                 uns={"pertpipe": uns.get("pertpipe", {})})
    write_template_files(split["template"], template_path=sm.output.template, pert_counts_path=sm.output.pert_counts)
    write_json({**figures, RECORD_KEY: record([sm.output.truth, sm.output.genes, sm.output.template,
                                               sm.output.pert_counts, sm.output.pseudobulk], "ground_truth")},
               sm.output.record)
    log.info("%s", figures)
