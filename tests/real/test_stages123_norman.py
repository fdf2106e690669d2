"""Stages 1-3 on the real Norman 2019 subset (perturbench) through the mirror, with the real cell-eval."""

from __future__ import annotations

import json
import tarfile

import pandas as pd
import pytest
from conftest import run_snakemake

pytestmark = [pytest.mark.real, pytest.mark.workflow]


def test_norman_unseen_targets_scored(shared_data, tmp_path):
    cfg = {
        "dataset": "perturbench_norman", "mirror": str(shared_data), "lock_file": None,
        "stage1": {"universe": {"kind": "vcc"}, "split": {"strategy": "random_unseen", "fraction": 0.3}},
        "models": ["cell_mean", "linear"],
    }
    run_snakemake(tmp_path, cfg, "stage3", timeout=1500)  # stages 1-3 (no model here needs the knowledge stage)
    res = tmp_path / "results/perturbench_norman"
    split = json.loads((res / "stage1/split.json").read_text())
    assert split["val_targets"] and all(c in ("single_unseen", "seen0", "seen1", "seen2", "unseen")
                                        for c in split["categories"].values())
    with tarfile.open(res / "stage3/linear/linear.vcc") as tf:
        assert sorted(tf.getnames()) == ["pred.h5ad.zst", "watermark.txt"]
    prep = json.loads((res / "stage3/linear/prep.json").read_text())
    assert prep["pred_shape"][1] == 18080
    scores = {m: json.loads((res / f"stage3/{m}/score.json").read_text()) for m in ("cell_mean", "linear")}
    assert scores["cell_mean"]["avg_score"] == pytest.approx(0.0, abs=0.05)
    for s in scores.values():
        assert s["n_perturbations"] == len(split["val_targets"])
    for m in scores:
        c = json.loads((res / f"stage3/{m}/consistency.json").read_text())["metrics"]
        assert c["MAE"]["max_abs_diff"] < 1e-6 and c["PDS"]["max_abs_diff"] < 1e-6 and c["DES"]["max_abs_diff"] <= 0.02
    board = pd.read_csv(res / "leaderboard.csv")
    assert len(board) == 2 and (res / "report.html").stat().st_size > 10_000
