"""Rule celleval_run: `cell-eval run` of the predictions against the truth (profile from config), or the local
engine above a size (config evaluation.run_engine); run.json says which."""
from pathlib import Path

from pertpipe.evaluation import celleval
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "celleval_run", verify=sm.input) as log:
    info = celleval.run(sm.input.predictions, sm.input.truth, Path(sm.output.results).parent,
                        profile=sm.params.profile, threads=sm.threads, log_file=sm.log[0], engine=sm.params.engine)
    files = info.pop("files")
    write_json({**info, "versions": celleval.versions()}, sm.output.run_info)
    log.info("%s engine wrote %s", info["engine"], sorted(files))
