"""Peer models (extra `peers`): GEARS and STATE trained by their own packages on our split, through the real
Snakemake rules, scored by the real cell-eval beside our baselines; GEARS's GO graph built from our gene2go as
GEARS's make_GO would; STATE's predictions are its own predict_step on the drawn control cells."""

from __future__ import annotations

import importlib.util
import json
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DEMO, run_snakemake

pytestmark = pytest.mark.workflow

GEARS_PARAMS = {"epochs": 2, "hidden_size": 16, "batch_size": 16, "n_genes": 0}
STATE_PARAMS = {"n_genes": 200, "cell_set_len": 16, "hidden_dim": 32, "n_layers": 2, "n_heads": 2,
                "intermediate_size": 64, "max_steps": 40, "batch_size": 4, "val_freq": 20, "device": "cpu",
                "checkpoint": "best"}
CFG = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500}, "models": ["cell_mean", "gears", "state"],
       "model_params": {"gears": GEARS_PARAMS, "state": STATE_PARAMS}}
PEER_MODULES = ("gears", "torch_geometric", "state", "cell_load")


def need_peers() -> None:
    """Skip where the peers extra is not installed, except in CI (which installs it): there, fail."""
    if any(importlib.util.find_spec(m) is None for m in PEER_MODULES):
        if os.environ.get("CI"):
            pytest.fail("CI must install the peers extra (requirements-test.txt pins cell-gears, torch_geometric, "
                        "arc-state and cell-load)")
        pytest.skip("the peers extra is not installed (pip install 'pertpipe[peers]')")


@pytest.fixture(scope="module")
def peer_run(tmp_path_factory):
    need_peers()
    wd = tmp_path_factory.mktemp("peers")
    run_snakemake(wd, CFG, "all", timeout=1500)
    return wd / "results" / "demo"


def test_gears_trains_predicts_and_is_scored(peer_run):
    res = peer_run
    tpl = pd.read_csv(res / "stage1/template.csv")
    pred = ad.read_h5ad(res / "stage2/gears/predictions.h5ad")
    assert list(pred.var_names) == (res / "stage1/genes.txt").read_text().split()
    assert pred.obs.groupby("target_gene").size().to_dict() == tpl.groupby("target_gene")["n_cells"].sum().to_dict()
    log = json.loads((res / "stage2/gears/train_log.json").read_text())
    assert log["peer"] == {"package": "cell-gears", "version": "0.1.2", "licence": "MIT",
                           "source": "https://github.com/snap-stanford/GEARS"}
    assert log["gears_genes"] == TINY_DEMO["n_genes"] and log["go_graph_edges"] > 0
    train_targets = set(ad.read_h5ad(res / "stage1/train.h5ad", backed="r").obs["target_gene"]) - {"non-targeting"}
    assert set(log["gears_val_perturbations"]) <= {f"{t}+ctrl" for t in train_targets}  # GEARS validates on ours
    board = pd.read_csv(res / "leaderboard.csv")
    assert set(board["model"]) == {"cell_mean", "gears", "state"}
    row = board.set_index("model").loc["gears"]
    assert np.isfinite(row["avg_score"]) and 0 <= row["PDS"] <= 1
    html = (res / "report.html").read_text()
    assert "Peer models" in html and "cell-gears" in html and "MIT" in html


def test_gears_prediction_is_control_plus_a_perturbation_shift(peer_run):
    """GEARS.predict's batch of 300 control cells, averaged, is their mean plus predict_shift (GEARS adds a
    cell-independent term to each control cell; which term depends on the position in the batch)."""
    import torch
    from torch_geometric.data import Batch, Data

    from pertpipe.models import load_model
    from pertpipe.models.peers.gears import PREDICT_BATCH

    m = load_model(peer_run / "stage2/gears/model.pt")
    target = next(t for t in pd.read_csv(peer_run / "stage1/template.csv")["target_gene"] if "+" not in t)
    shift = m.predict_shift(target, "typeA")
    assert np.abs(shift).max() > 0 and shift.shape == (len(m.genes),)
    x = torch.rand(PREDICT_BATCH, len(m.gears_genes))
    batch = Batch.from_data_list([Data(x=row[:, None], pert_idx=[m.pert_list.index(target)]) for row in x])
    with torch.no_grad():
        out = m._network()(batch).numpy()
    np.testing.assert_allclose(out.mean(axis=0) - x.numpy().mean(axis=0), shift[m.gene_idx], atol=1e-5)


def test_state_trains_predicts_and_is_scored(peer_run):
    res = peer_run
    tpl = pd.read_csv(res / "stage1/template.csv")
    pred = ad.read_h5ad(res / "stage2/state/predictions.h5ad")
    assert list(pred.var_names) == (res / "stage1/genes.txt").read_text().split()
    assert pred.obs.groupby("target_gene").size().to_dict() == tpl.groupby("target_gene")["n_cells"].sum().to_dict()
    log = json.loads((res / "stage2/state/train_log.json").read_text())
    assert log["peer"] == {"package": "arc-state", "version": "0.11.1", "licence": "CC BY-NC-SA 4.0 (non-commercial)",
                           "source": "https://github.com/ArcInstitute/state"}
    train_targets = set(ad.read_h5ad(res / "stage1/train.h5ad", backed="r").obs["target_gene"]) - {"non-targeting"}
    target_genes = {g for t in train_targets for g in t.split("+")}
    # the 200 most variable genes plus the training targets' genes not among them
    assert 200 <= log["state_genes"] <= 200 + len(target_genes) and log["steps"] == 40 and len(log["val_loss"]) == 2
    # checkpoint best: STATE's ModelCheckpoint file, saved at a validation step
    assert log["checkpoint"] == "best.ckpt" and log["checkpoint_step"] in (20, 40), log["checkpoint_step"]
    held_out = set(tpl["target_gene"]) - {"non-targeting"}
    val = {t for v in log["state_val_perturbations"].values() for t in v}
    assert val <= train_targets and not val & held_out  # STATE validates on training targets, never on ours
    row = pd.read_csv(res / "leaderboard.csv").set_index("model").loc["state"]
    assert np.isfinite(row["avg_score"]) and 0 <= row["PDS"] <= 1
    html = (res / "report.html").read_text()
    assert "arc-state" in html and "CC BY-NC-SA 4.0" in html


def test_state_prediction_is_states_own_forward_pass(peer_run):
    """predict_cells = STATE's predict_step on the drawn control cells (trained genes), control values elsewhere;
    held-out targets differ through their knowledge vectors."""
    import torch

    from pertpipe.models import load_model
    from pertpipe.models.summary import ControlCells

    m = load_model(peer_run / "stage2/state/model.pt")
    controls = ControlCells.load(peer_run / "stage1/train.h5ad")
    pick = np.arange(10)
    held = sorted(set(pd.read_csv(peer_run / "stage1/template.csv")["target_gene"]) - {"non-targeting"})[:2]
    rng = np.random.default_rng(0)
    a, b = (m.predict_cells(t, "typeA", "b0", controls, pick, rng) for t in held)
    x = controls.x[pick].toarray()
    batch = {"ctrl_cell_emb": torch.tensor(x[:, m.gene_idx], dtype=torch.float32),
             "pert_emb": torch.from_numpy(m.pert_vector(held[0])).repeat(10, 1), "pert_name": [held[0]] * 10}
    with torch.no_grad():
        direct = m._net().predict_step(batch, batch_idx=0, padded=False)["preds"].numpy()
    # the training cells' maximum over STATE's genes bounds the prediction (tiny demo: every cell trains)
    train_x = ad.read_h5ad(peer_run / "stage1/train.h5ad").X[:, m.gene_idx]
    assert m.x_max == pytest.approx(float(train_x.max()))
    np.testing.assert_allclose(a[:, m.gene_idx], np.clip(direct, 0, m.x_max), rtol=1e-5, atol=1e-6)
    other = np.setdiff1d(np.arange(x.shape[1]), m.gene_idx)
    np.testing.assert_array_equal(a[:, other], x[:, other])
    assert np.abs(m.pert_vector(held[0]) - m.pert_vector(held[1])).max() > 0
    assert np.abs(a - b).max() > 0
    # an unbounded output above the training range is clipped to it, and the note says how many values
    cap = float(np.quantile(direct, 0.9))
    m.x_max = cap
    c = m.predict_cells(held[0], "typeA", "b0", controls, pick, rng)
    n_above = int((direct > cap).sum())
    assert c[:, m.gene_idx].max() == pytest.approx(cap) and n_above > 0
    np.testing.assert_array_equal(a[:, other], c[:, other])
    assert f"{n_above} predicted values above" in m.notes["clipped_above_training_max"]


def test_go_graph_matches_gears_own_edge_function():
    need_peers()
    from gears.utils import get_GO_edge_list

    from pertpipe.models.peers.gears import go_jaccard_edges

    rng = np.random.default_rng(0)
    go = {f"G{i}": {f"GO:{t:07d}" for t in rng.choice(30, size=rng.integers(1, 8), replace=False)} for i in range(40)}
    ours = go_jaccard_edges(list(go), go, block=7)
    theirs = pd.DataFrame([e for g in go for e in get_GO_edge_list((g, go))], columns=["source", "target", "importance"])
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), theirs, check_dtype=False, atol=1e-6)


def test_missing_peer_package_says_how_to_install():
    from pertpipe.errors import ConfigError
    from pertpipe.models.peers.common import require_peer

    with pytest.raises(ConfigError, match=r"model 'state' needs no-such-package \(licence: CC BY-NC-SA 4.0 "
                                          r"\(non-commercial\).*install with pip install 'pertpipe\[peers\]'"):
        require_peer("state", ("no_such_module_xyz",), "no-such-package", "CC BY-NC-SA 4.0 (non-commercial)")


@pytest.mark.parametrize("params, words", [
    ({"hidden_dim": 30, "n_heads": 4}, ["hidden_dim 30", "n_heads 4", "Fix"]),
    ({"checkpoint": "last"}, ["checkpoint 'last'", "best or final"]),
    ({"device": "gpu"}, ["device 'gpu'", "auto, cpu or cuda"]),
])
def test_state_settings_are_checked_before_training(params, words):
    need_peers()
    from pertpipe.errors import ConfigError
    from pertpipe.models import build_model

    with pytest.raises(ConfigError) as err:
        build_model("state", params, seed=0)
    assert all(w in str(err.value) for w in words), str(err.value)
