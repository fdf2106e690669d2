"""Rule celleval_run: `cell-eval run` of the predictions against the truth (profile from config)."""
from pathlib import Path

from pertpipe.evaluation import celleval
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "celleval_run") as log:
    files = celleval.run(sm.input.predictions, sm.input.truth, Path(sm.output.results).parent,
                         profile=sm.params.profile, threads=sm.threads, log_file=sm.log[0])
    log.info("wrote %s", sorted(files))
