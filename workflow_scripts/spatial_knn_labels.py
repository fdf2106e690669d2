"""Rule knn_labels: the validated choices (k, residual transfer, smoothing, priors), the shared latent space (two
encoders, kNN alignment) and each spot's pseudo-labels."""
from pertpipe.io import script_step
from pertpipe.spatial.model import SpatialParams
from pertpipe.spatial.stages import run_knn_labels

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "knn_labels", job=sm) as log:
    params = SpatialParams.from_config(sm.params.model, seed=sm.params.seed)
    log.info("%s", run_knn_labels(sm.input.spatial, sm.input.scrna, sm.input.lr_genes, sm.input.priors, params,
                                  sm.output.h5ad, sm.output.summary, checkpoint=sm.params.checkpoint))
