"""Rule leaderboard: rows (models, and `<model>_raw` of shrunk ones) x (metrics, scaled, avg_score, λ, anchor,
the baseline a λ = 0 row equals, Δ vs the strongest baseline with its CI and tie mark, train time) -> csv + md,
and standing.json (can this dataset rank models: the split-half ceiling and the truth's significant DE genes)."""
from pathlib import Path

from pertpipe.evaluation.report import add_vcc2026, leaderboard, write_leaderboard
from pertpipe.evaluation.standing import add_standing, dataset_standing
from pertpipe.io import read_json, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "leaderboard", job=sm) as log:
    models = list(sm.params.models)
    board = leaderboard(dict(zip(models, sm.input.scores)), dict(zip(models, sm.input.logs)),
                        dict(zip(models, sm.input.local)), dict(zip(models, sm.input.predicts)))
    board = add_standing(board, dict(zip(models, sm.input.results)), sm.input.baseline_results,
                         list(sm.params.baselines), seed=sm.params.seed)
    standing = dataset_standing(read_json(sm.input.ceiling), sm.input.real_de)
    lead = standing["verdict"]
    if sm.input.vcc2026:  # evaluation.profile vcc2026 / both: cell-eval2's columns, or why there are none
        board, note = add_vcc2026(board, dict(zip(models, sm.input.vcc2026)))
        standing["vcc2026"] = {"skipped": note} if note else read_json(sm.input.vcc2026_bundle[0])
        lead += f" {note}" if note else ""
    write_leaderboard(board, sm.output.csv, sm.output.md, title=f"Leaderboard: {Path(sm.output.csv).parent.name}",
                      lead=lead)
    write_json(standing, sm.output.standing)
    log.info("%s\n%s", standing["verdict"], board.to_string(index=False))
