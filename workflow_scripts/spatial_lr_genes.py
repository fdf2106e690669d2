"""Rule lr_genes: the LR resource's genes that the scRNA-seq expresses (the genes to impute)."""
from pertpipe.io import script_step
from pertpipe.spatial.stages import run_lr_genes

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "lr_genes", job=sm) as log:
    info = run_lr_genes(sm.input.spatial, sm.input.scrna, sm.input.resource, sm.params.resource, sm.params.species,
                        min_mean=sm.params.lr["min_mean"], min_fraction=sm.params.lr["min_fraction"],
                        out_json=sm.output[0])
    log.info("%d LR genes expressed, %d measured in the spatial data", info["n_lr_genes_expressed"],
             len(info["measured_in_spatial"]))
