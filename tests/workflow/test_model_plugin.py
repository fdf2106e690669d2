"""A model is one module in a folder of the user's own: it runs through Snakemake like any model."""

from __future__ import annotations

import json

import pandas as pd
from conftest import TINY_DEMO, TOY_MODEL, run_snakemake


def test_one_module_runs_through_snakemake(tmp_path):
    """The toy model is ONE file in a folder of the user's own ($PERTPIPE_MODELS_PATH): no rule, runner or script is
    edited, and it trains (with its declared input passed by the rule), predicts and is scored like any model."""
    plugins = tmp_path / "my_models"
    plugins.mkdir()
    (plugins / "toy_shift.py").write_text(TOY_MODEL)
    wd = tmp_path / "wd"
    run_snakemake(wd, {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
                       "models": ["cell_mean", "toy_shift"], "model_params": {"toy_shift": {"size": 0.1}},
                       "knowledge": {"cache_dir": str(wd / "cache")}},
                  env={"PERTPIPE_MODELS_PATH": str(plugins), "HF_HUB_OFFLINE": "1"}, timeout=1200)
    res = wd / "results/demo"
    log = json.loads((res / "stage2/toy_shift/train_log.json").read_text())
    assert log["model"] == "toy_shift" and log["facets_read"].endswith("knowledge/facet_embeddings.pt")
    board = pd.read_csv(res / "leaderboard.csv").set_index("model")
    assert {"cell_mean", "toy_shift"} <= set(board.index)
    assert board.loc["toy_shift", "MAE"] != board.loc["cell_mean", "MAE"]  # its own predictions were scored
