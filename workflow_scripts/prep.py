"""Rule prep: check the predictions, then `cell-eval prep` (or its streaming equivalent for VCC-size files)
-> <model>.vcc (archive verified)."""
from pertpipe.data.genes import load_universe
from pertpipe.evaluation import celleval
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "prep", verify=sm.input) as log:
    checks = celleval.check_predictions(sm.input.predictions, genes=load_universe(sm.input.genes),
                                        truth=sm.input.truth, template=sm.input.template)
    info = celleval.prep(sm.input.predictions, sm.input.genes, sm.output.vcc, log_file=sm.log[0],
                         engine=sm.params.engine, chunk_size=sm.params.chunk_size)
    write_json({**checks, **info, "versions": celleval.versions()}, sm.output.summary)
    log.info("%s", info)
