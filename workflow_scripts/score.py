"""Rule score: `cell-eval score` of every row against the cell-mean baseline (one process) -> score.json a row."""
from pertpipe.evaluation.rows import score_rows
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "score", job=sm) as log:
    avg = score_rows(list(sm.params.rows), list(sm.input.aggs), list(sm.input.results), sm.input.baseline,
                     list(sm.output.scores), log_file=sm.log[0])
    log.info("avg_score: %s", avg)
