"""Rule zscores: per-context baselines, mean shifts and z-scores of the training split (cross-context models)."""
from pertpipe.data.zscores import context_stats
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "zscores", job=sm) as log:
    z = sm.params.zscores
    stats = context_stats(sm.input.train, robust=z["robust"], sd_floor=z["sd_floor"],
                          max_robust_cells=z["max_robust_cells"], chunk_size=sm.params.chunk_size, seed=sm.params.seed)
    stats.write(sm.output.h5ad)
    summary = stats.summary()
    write_json(summary, sm.output.summary)
    log.info("%s", summary)
