"""Rule report: the run's self-contained HTML report for its task, with links to the run's files
(pertpipe.evaluation.run_report)."""
from pertpipe.evaluation.run_report import write_run_report
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "report", job=sm) as log:
    inputs = {k: v if isinstance(v, str) else list(v) for k, v in sm.input.items()}  # per-model inputs are lists
    text = write_run_report(sm.params.task, dataset=sm.params.dataset, inputs=inputs, models=list(sm.params.models),
                            out_html=sm.output.html)
    log.info("report written (%d bytes)", len(text))
