"""Rule score: `cell-eval score` against the cell-mean baseline -> score.json (with versions)."""
from pertpipe.evaluation import celleval
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "score") as log:
    s = celleval.score(sm.input.agg, sm.input.baseline, sm.input.results, log_file=sm.log[0])
    write_json(s, sm.output.score)
    log.info("%s", s)
