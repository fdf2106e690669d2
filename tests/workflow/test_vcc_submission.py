"""The VCC submission setting: the targets to predict have no cells in the training file (the challenge's support
set). `stage1.split.submission: true` trains on every perturbed cell, predicts the val_counts targets with their
cell counts and ends with each model's cell-eval prep archive; the `vcc` preset is this setting."""

from __future__ import annotations

import json
import tarfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake

from pertpipe import CONTROL_LABEL
from pertpipe.data.simulate import ScreenParams, write_screen
from pertpipe.data.split import make_split
from pertpipe.errors import ConfigError

GENES = [f"G{i:04d}" for i in range(400)]
TRAINED = [f"G{i:04d}" for i in range(10, 22)]
TO_PREDICT = {"G0300": 40, "G0301": 25, "G0302": 33}


def test_submission_split_trains_on_every_perturbed_cell_and_asks_for_the_listed_targets():
    rng = np.random.default_rng(0)
    labels = rng.choice([CONTROL_LABEL, "A", "B", "C"], size=400)
    obs = pd.DataFrame({"target_gene": labels, "cell_type": "H1", "batch": rng.choice(["b1", "b2"], 400)})
    vc = pd.DataFrame({"target_gene": ["X", "Y", "C"], "n_cells": [10, 7, 5]})
    res = make_split(obs, strategy="vcc", seed=0, val_counts=vc, control_val_fraction=0.2, submission=True)
    a = res.assignment
    assert res.submission and res.val_targets == ["C", "X", "Y"]
    assert set(labels[a == "train"]) == {CONTROL_LABEL, "A", "B"}  # C is to be predicted: never trained on
    assert (a[labels == "C"] == "drop").all() and set(labels[a == "val"]) == {CONTROL_LABEL}
    from pertpipe.data.split import split_summary

    tpl = pd.DataFrame(split_summary(obs, res, strategy="vcc", seed=0, params={})["template"])
    assert tpl.groupby("target_gene")["n_cells"].sum().to_dict() == {
        "C": 5, "X": 10, "Y": 7, CONTROL_LABEL: int((a == "val").sum())}
    assert set(tpl.batch) == {"b1", "b2"}  # spread over the held-out controls' strata
    with pytest.raises(ConfigError, match="submission needs strategy 'vcc'"):
        make_split(obs, strategy="random_unseen", seed=0, submission=True)


def test_submission_run_ends_with_prep_archives_of_the_requested_cells(tmp_path):
    src = tmp_path / "support.h5ad"
    write_screen(src, GENES, TRAINED, seed=2, params=ScreenParams(n_cells=1600, n_controls=400, umi_per_cell=6000,
                                                                base_sd=1.2, de_genes=20, chunk_size=800))
    pd.DataFrame({"target_gene": list(TO_PREDICT), "n_cells": list(TO_PREDICT.values())}).to_csv(
        tmp_path / "pert_counts_Validation.csv", index=False)
    cfg = {"dataset": "support", "lock_file": None,
           "datasets": {"support": {"path": str(src), "adapter": "vcc", "adapter_options": {"default_cell_type": "H1"}}},
           "stage1": {"chunk_size": 500, "universe": {"kind": "source"},
                      "split": {"strategy": "vcc", "submission": True, "control_val_fraction": 0.1,
                                "val_counts": str(tmp_path / "pert_counts_Validation.csv")}},
           "evaluation": {"profile": "both", "vcc2026_contexts": {"H1": "A"}},  # also the 2026 submission
           "models": ["control", "cell_mean", "linear"]}
    run_snakemake(tmp_path, cfg)
    res = tmp_path / "results/support"
    split = json.loads((res / "stage1/split.json").read_text())
    assert split["submission"] is True and split["val_targets"] == sorted(TO_PREDICT)
    truth = ad.read_h5ad(res / "stage1/truth.h5ad", backed="r")
    assert set(truth.obs.target_gene) == {CONTROL_LABEL}
    n_ctrl = truth.n_obs
    for m in cfg["models"]:
        pred = ad.read_h5ad(res / f"stage2/{m}/predictions.h5ad", backed="r")
        counts = pred.obs.target_gene.value_counts().to_dict()
        assert counts == {**TO_PREDICT, CONTROL_LABEL: n_ctrl}
        assert list(pred.var_names) == GENES
        with tarfile.open(res / f"stage3/{m}/{m}.vcc") as tf:
            assert sorted(tf.getnames()) == ["pred.h5ad.zst", "watermark.txt"]
        prep = json.loads((res / f"stage3/{m}/prep.json").read_text())
        assert prep["perturbations"] == len(TO_PREDICT) and prep["cells"] == sum(TO_PREDICT.values()) + n_ctrl
    # VCC 2026: raw counts, no control cells, context labels, packaged and checked by vcc-cli's `vcc prep`
    for m in cfg["models"]:
        with tarfile.open(res / f"stage3/{m}/{m}_2026.vcc") as tf:
            assert sorted(tf.getnames()) == ["meta.json", "pred.h5ad.zst"]
            meta = json.loads(tf.extractfile("meta.json").read())
        assert meta["contexts"] == ["A"] and meta["n_obs"] == sum(TO_PREDICT.values()) and meta["n_vars"] == len(GENES)
        prep26 = json.loads((res / f"stage3/{m}/prep_2026.json").read_text())
        assert prep26["vcc_prep"]["normalization"] == "counts-preserved" and prep26["versions"]["vcc-cli"] == "0.3.0"
        assert prep26["vcc_prep"]["cells_per_context"] == {"A": sum(TO_PREDICT.values())}
    assert "SUBMISSION: 3 target(s) to predict (98 cells)" in (res / "stage1/stage1_report.txt").read_text()
    assert not (res / "leaderboard.csv").exists()  # nothing to score
    assert not (res / "stage3/cell_mean/results.csv").exists()


def test_the_vcc_preset_is_the_submission_setting():
    preset = yaml.safe_load((REPO / "resources/presets/vcc.yaml").read_text())
    assert preset["dataset"] == "vcc2025"
    assert preset["stage1"]["universe"] == {"kind": "vcc"}
    assert preset["stage1"]["split"]["strategy"] == "vcc" and preset["stage1"]["split"]["val_counts"] == "vcc"
    assert preset["stage1"]["split"]["submission"] is True
    assert preset["evaluation"]["profile"] == "vcc2025"  # the 2025 support set: cell-eval only
    for m in ("dygenept", "cfmvc"):
        assert preset["model_params"][m]["device"] == "cuda" and preset["model_params"][m]["max_cells"] >= 221_000
