"""Rule train_lrimpute: the LR-only decoder on the pseudo-labels, the spot's measured LR genes and the priors."""
from pertpipe.io import script_step
from pertpipe.spatial.model import SpatialParams
from pertpipe.spatial.stages import run_train

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "train_lrimpute", job=sm) as log:
    params = SpatialParams.from_config(sm.params.model, seed=sm.params.seed)
    log.info("%s", run_train(sm.input.spatial, sm.input.scrna, sm.input.knn, sm.input.priors, params,
                             sm.output.model, sm.output.summary, checkpoint=sm.params.checkpoint))
