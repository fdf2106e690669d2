"""Rule celleval_rows_<k>: a batch of rows checked, packed (`cell-eval prep` -> <row>.vcc + prep.json) and, unless
the run is a submission, scored (`cell-eval run`, the local scorer and their agreement); cell-eval imported once
for the batch (pertpipe.evaluation.rows)."""
from pertpipe.evaluation.rows import celleval_rows
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], sm.rule, job=sm) as log:
    keys = ("results", "agg", "pred_de", "real_de", "run_info", "local_metrics", "local_table", "consistency")
    summary = celleval_rows(
        list(sm.params.rows), list(sm.input.predictions), genes=sm.input.genes, truth=sm.input.truth,
        template=sm.input.template, vcc=list(sm.output.vcc), prep_json=list(sm.output.prep),
        run_outputs={k: list(getattr(sm.output, k)) for k in keys} if sm.params.score else None,
        profile=sm.params.profile, run_engine=sm.params.run_engine, prep_engine=sm.params.prep_engine,
        threads=sm.threads, chunk_size=sm.params.chunk_size, log_file=sm.log[0])
    for row, info in summary.items():
        log.info("%s: %s", row, info)
