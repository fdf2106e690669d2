"""Rule report: the run's self-contained HTML report, written by its task (pertpipe.tasks), with links to the run's
files."""
from pertpipe.io import script_step
from pertpipe.tasks import get_task

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "report", job=sm) as log:
    inputs = {k: v if isinstance(v, str) else list(v) for k, v in sm.input.items()}  # per-model inputs are lists
    text = get_task(sm.params.task).write_report(dataset=sm.params.dataset, inputs=inputs,
                                                 models=list(sm.params.models), out_html=sm.output.html)
    log.info("report written (%d bytes)", len(text))
