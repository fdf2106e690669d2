"""Rule communication: LR interaction scores of neighbouring spots before vs after imputation."""
from pertpipe.io import script_step
from pertpipe.spatial.stages import run_communication

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "communication", job=sm) as log:
    log.info("%s", run_communication(sm.input.spatial, sm.input.scrna, sm.input.lr_genes, sm.input.knn,
                                     sm.input.imputed, neighbors=sm.params.neighbors, out_json=sm.output.json,
                                     out_csv=sm.output.csv))
