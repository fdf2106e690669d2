"""Rule vcc2026_rows_<k>: a batch of rows as counts (library sizes of matching training controls), scored by
cell-eval2's vcc2026 preset against the dataset's real bundle, cell-eval2 imported once for the batch
-> vcc2026.json a row (+ the run's aggregate and metadata)."""
from pertpipe.evaluation.rows import vcc2026_rows
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], sm.rule, job=sm) as log:
    avg = vcc2026_rows(list(sm.params.rows), list(sm.input.predictions), train=sm.input.train,
                       bundle_info=sm.input.info, bundle_files=sm.input.files, scores=list(sm.output.score),
                       aggs=list(sm.output.agg), metas=list(sm.output.meta), seed=sm.params.seed,
                       chunk_size=sm.params.chunk_size, log_file=sm.log[0])
    log.info("vcc2026 avg_score: %s", avg)
