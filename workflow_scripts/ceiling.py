"""Rule ceiling: the truth's split-half replicate scored like a model, beside the cell-mean baseline on the same
half (pertpipe.evaluation.standing), from the scoring cache when this truth computed it before -> ceiling.json."""
from pertpipe.evaluation.standing import cached_ceiling
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "ceiling", job=sm) as log:
    ceiling = cached_ceiling(sm.input.truth, sm.input.baseline, seed=sm.params.seed, cache_dir=sm.params.cache)
    cache = ceiling.pop("cache")  # not in the file: a re-run writes the same bytes
    write_json(ceiling, sm.output.ceiling)
    log.info("(%s) ceiling avg_score %.4f [%.4f, %.4f], can rank: %s", cache, ceiling["avg_score"], ceiling["ci_low"],
             ceiling["ci_high"], ceiling["can_rank"])
