"""Rule signature_leaderboard: models x signature metrics (mean over held-out signatures), each row's standing against
the strongest baseline (Δ pearson paired per signature, bootstrap 95 % CI) -> csv + md."""
from pathlib import Path

import pandas as pd

from pertpipe.evaluation.signatures import signature_leaderboard, write_signature_leaderboard
from pertpipe.evaluation.standing import add_paired_standing
from pertpipe.io import read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "signature_leaderboard", job=sm) as log:
    summaries = {m: read_json(p) for m, p in zip(sm.params.models, sm.input.metrics)}
    per_signature = {m: pd.read_csv(p)["pearson"] for m, p in zip(sm.params.models, sm.input.tables)}
    board = add_paired_standing(signature_leaderboard(summaries), per_signature, list(sm.params.baselines),
                                score="pearson", seed=sm.params.seed)
    write_signature_leaderboard(board, summaries, sm.output.csv, sm.output.md,
                                title=f"Signature leaderboard: {Path(sm.output.csv).parent.name}")
    log.info("\n%s", board.to_string(index=False))
