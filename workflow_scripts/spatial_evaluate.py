"""Rule spatial_evaluate: k-fold held-out LR genes; lrimpute, its ablations and the baselines; per-gene metrics."""
import torch

from pertpipe.io import script_step
from pertpipe.spatial.model import SpatialParams
from pertpipe.spatial.stages import run_evaluate

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "spatial_evaluate", job=sm) as log:
    torch.set_num_threads(1)  # the folds run side by side in sm.threads processes, one thread each
    params = SpatialParams.from_config(sm.params.model, seed=sm.params.seed)
    info = run_evaluate(sm.input.spatial, sm.input.scrna, sm.input.lr_genes, sm.input.priors, params,
                        dict(sm.params.evaluate), sm.output.per_gene, sm.output.summary, sm.output.json,
                        sm.output.heldout, workers=max(1, sm.threads))
    log.info("%s", info["summary"])
