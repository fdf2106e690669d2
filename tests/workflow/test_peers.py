"""Peer models (extra `peers`): GEARS trained by its own package on our split, through the real Snakemake rules,
scored by the real cell-eval beside our baselines; its GO graph built from our gene2go as GEARS's make_GO would."""

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
CFG = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500}, "models": ["cell_mean", "gears"],
       "model_params": {"gears": GEARS_PARAMS}}


def need_peers() -> None:
    """Skip where the peers extra is not installed, except in CI (which installs it): there, fail."""
    if importlib.util.find_spec("gears") is None or importlib.util.find_spec("torch_geometric") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install the peers extra (requirements.txt pins cell-gears and torch_geometric)")
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
    assert set(board["model"]) == {"cell_mean", "gears"}
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
    from pertpipe.models.gears_peer import PREDICT_BATCH

    m = load_model(peer_run / "stage2/gears/model.pt")
    target = next(t for t in pd.read_csv(peer_run / "stage1/template.csv")["target_gene"] if "+" not in t)
    shift = m.predict_shift(target, "typeA")
    assert np.abs(shift).max() > 0 and shift.shape == (len(m.genes),)
    x = torch.rand(PREDICT_BATCH, len(m.gears_genes))
    batch = Batch.from_data_list([Data(x=row[:, None], pert_idx=[m.pert_list.index(target)]) for row in x])
    with torch.no_grad():
        out = m._network()(batch).numpy()
    np.testing.assert_allclose(out.mean(axis=0) - x.numpy().mean(axis=0), shift[m.gene_idx], atol=1e-5)


def test_go_graph_matches_gears_own_edge_function():
    need_peers()
    from gears.utils import get_GO_edge_list

    from pertpipe.models.gears_peer import go_jaccard_edges

    rng = np.random.default_rng(0)
    go = {f"G{i}": {f"GO:{t:07d}" for t in rng.choice(30, size=rng.integers(1, 8), replace=False)} for i in range(40)}
    ours = go_jaccard_edges(list(go), go, block=7)
    theirs = pd.DataFrame([e for g in go for e in get_GO_edge_list((g, go))], columns=["source", "target", "importance"])
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), theirs, check_dtype=False, atol=1e-6)


def test_missing_peer_package_says_how_to_install():
    from pertpipe.errors import ConfigError
    from pertpipe.models.gears_peer import require_peer

    with pytest.raises(ConfigError, match=r"model 'gears' needs no-such-package.*install with pip install "
                                          r"'pertpipe\[peers\]'"):
        require_peer("gears", ("no_such_module_xyz",), "no-such-package")
