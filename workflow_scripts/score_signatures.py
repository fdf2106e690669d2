"""Rule score_signatures: every held-out signature against the model's prediction (Pearson, Spearman, RMSE, precision@k)."""
from pertpipe.evaluation.signatures import score_signature_files
from pertpipe.io import atomic_path, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "score_signatures", job=sm) as log:
    table, summary = score_signature_files(sm.input.truth, sm.input.predictions)
    with atomic_path(sm.output.table) as tmp:
        table.to_csv(tmp, index=False)
    write_json(summary, sm.output.metrics)
    log.info("%s", {k: v for k, v in summary.items() if k != "per_context"})
