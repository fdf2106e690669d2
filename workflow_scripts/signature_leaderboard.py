"""Rule signature_leaderboard: models x signature metrics (mean over held-out signatures) -> csv + md."""
from pathlib import Path

from pertpipe.evaluation.signatures import signature_leaderboard, write_signature_leaderboard
from pertpipe.io import read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "signature_leaderboard") as log:
    summaries = {m: read_json(p) for m, p in zip(sm.params.models, sm.input.metrics)}
    board = signature_leaderboard(summaries)
    write_signature_leaderboard(board, summaries, sm.output.csv, sm.output.md,
                                title=f"Signature leaderboard: {Path(sm.output.csv).parent.name}")
    log.info("\n%s", board.to_string(index=False))
