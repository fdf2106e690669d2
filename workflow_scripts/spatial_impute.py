"""Rule impute: every LR gene in every spot (masked where the matched cells never express it)."""
from pertpipe.io import script_step
from pertpipe.spatial.stages import run_impute

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "impute", job=sm) as log:
    log.info("%s", run_impute(sm.input.spatial, sm.input.scrna, sm.input.knn, sm.input.model, sm.output[0]))
