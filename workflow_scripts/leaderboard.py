"""Rule leaderboard: rows (models, and `<model>_raw` of shrunk ones) x (metrics, scaled, avg_score, λ, anchor,
the baseline a λ = 0 row equals, train time) -> csv + md."""
from pathlib import Path

from pertpipe.evaluation.report import leaderboard, write_leaderboard
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "leaderboard") as log:
    models = list(sm.params.models)
    board = leaderboard(dict(zip(models, sm.input.scores)), dict(zip(models, sm.input.logs)),
                        dict(zip(models, sm.input.local)), dict(zip(models, sm.input.predicts)))
    write_leaderboard(board, sm.output.csv, sm.output.md, title=f"Leaderboard: {Path(sm.output.csv).parent.name}")
    log.info("\n%s", board.to_string(index=False))
