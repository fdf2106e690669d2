"""Rule score_labels: PerturbQA's auc_per_gene (DE, direction) and AUPRC per gene of one model's test scores."""
import anndata as ad

from pertpipe.evaluation.labels import score_labels
from pertpipe.io import atomic_path, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], f"score_labels_{sm.wildcards.model}", job=sm) as log:
    truth, pred = ad.read_h5ad(sm.input.truth), ad.read_h5ad(sm.input.predictions)
    table, metrics = score_labels(truth, pred, path=sm.input.predictions)
    with atomic_path(sm.output.table) as tmp:
        table.to_csv(tmp, index=False)
    write_json({"model": sm.wildcards.model, **metrics}, sm.output.metrics)
    log.info("%s", metrics)
