"""Rule ceiling: the truth's split-half replicate scored like a model, beside the cell-mean baseline on the same
half (pertpipe.evaluation.standing) -> ceiling.json."""
from pertpipe.evaluation.standing import split_half_ceiling
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "ceiling") as log:
    ceiling = split_half_ceiling(sm.input.truth, sm.input.baseline, seed=sm.params.seed)
    write_json(ceiling, sm.output.ceiling)
    log.info("ceiling avg_score %.4f [%.4f, %.4f], can rank: %s", ceiling["avg_score"], ceiling["ci_low"],
             ceiling["ci_high"], ceiling["can_rank"])
