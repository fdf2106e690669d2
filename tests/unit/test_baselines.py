"""The field's baselines (celltype_mean, target_knockdown, additive, knowledge_ridge) against predictions worked out
by hand on a tiny training split."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from pertpipe.models import build_model, load_model
from pertpipe.models.inputs import ModelInputs

GENES = ["A", "B", "C", "D"]
CTRL = {"x": [1.0, 1.0, 1.0, 1.0], "y": [2.0, 2.0, 2.0, 2.0]}
# (target, cell type) -> the group's mean (every cell of a group is the same)
GROUPS = {("A", "x"): [0.5, 1.0, 1.5, 1.0], ("B", "x"): [1.0, 0.2, 1.0, 1.5],
          ("A", "y"): [1.0, 2.0, 2.0, 3.0], ("A+B", "x"): [0.3, 0.3, 2.0, 2.0]}


@pytest.fixture
def train(tmp_path):
    rows, obs = [], []
    for ct, v in CTRL.items():
        rows += [v] * 4
        obs += [("non-targeting", ct)] * 4
    for (t, ct), v in GROUPS.items():
        rows += [v] * 2
        obs += [(t, ct)] * 2
    o = pd.DataFrame(obs, columns=["target_gene", "cell_type"])
    o["batch"] = "b"
    o.index = [f"c{i}" for i in range(len(o))]
    path = tmp_path / "train.h5ad"
    ad.AnnData(np.asarray(rows, np.float32), obs=o, var=pd.DataFrame(index=GENES)).write_h5ad(path)
    return path


def _fit(name, train, hp=None, **files):
    m = build_model(name, hp or {})
    m.fit(ModelInputs(train, **files))
    return m


def test_celltype_mean_is_the_contexts_mean_training_shift(train, tmp_path):
    m = _fit("celltype_mean", train)
    # x: groups A, B, A+B -> deltas (-.5,0,.5,0), (0,-.8,0,.5), (-.7,-.7,1,1); mean over the three
    assert np.allclose(m.predict_shift("Z", "x"), [-0.4, -0.5, 0.5, 0.5])
    assert np.allclose(m.predict_shift("Z", "y"), [-1.0, 0.0, 0.0, 1.0])  # y: only A
    assert np.allclose(m.predict_shift("Z", "w"), [-0.55, -0.375, 0.375, 0.625])  # unknown: all four groups
    m.save(tmp_path / "m.pt")
    assert np.allclose(load_model(tmp_path / "m.pt").predict_shift("Z", "y"), [-1.0, 0.0, 0.0, 1.0])


def test_target_knockdown_adds_the_median_own_gene_change(train):
    m = _fit("target_knockdown", train)
    # measured singles: A in x (0.5 vs 1: r=-.5), B in x (0.2 vs 1: r=-.8), A in y (1 vs 2: r=-.5) -> median -0.5
    assert m.ratio == pytest.approx(-0.5) and m.n_measured == 3
    assert np.allclose(m.predict_shift("C", "x"), [-0.4, -0.5, -0.5, 0.5])  # C's control 1.0 -> -0.5
    assert np.allclose(m.predict_shift("D", "y"), [-1.0, 0.0, 0.0, -1.0])  # D's control 2.0 -> -1.0
    assert np.allclose(m.predict_shift("NOTMEASURED", "x"), [-0.4, -0.5, 0.5, 0.5])


def test_additive_sums_seen_singles_and_falls_back_to_the_context_mean(train):
    m = _fit("additive", train)
    a_x, b_x = np.array([-0.5, 0, 0.5, 0]), np.array([0, -0.8, 0, 0.5])
    assert np.allclose(m.predict_shift("A+B", "x"), a_x + b_x)
    assert np.allclose(m.predict_shift("A", "x"), a_x)
    # B was never seen in y: its cell-weighted mean over the cell types it was seen in (x only)
    assert np.allclose(m.predict_shift("A+B", "y"), np.array([-1.0, 0, 0, 1]) + b_x)
    # a gene never seen alone contributes the cell-type mean once
    assert np.allclose(m.predict_shift("A+Q", "x"), a_x + np.array([-0.4, -0.5, 0.5, 0.5]))
    assert np.allclose(m.predict_shift("Q", "x"), [-0.4, -0.5, 0.5, 0.5])
    assert m.notes["A+Q|x"] == "1 of 2 gene(s) seen alone in training"


def test_knowledge_ridge_maps_gene_text_to_shift(train):
    # one facet, 2-d embeddings: A=(1,0), B=(0,1), C=(1,0) (C's text is A's), D has no text
    tensor = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    knowledge = {"genes": GENES, "facets": ["f"], "tensor": tensor, "mask": torch.tensor([[1.0], [1.0], [1.0], [0.0]])}
    m = _fit("knowledge_ridge", train, {"ridge": 0.0}, knowledge=knowledge)
    # training targets (cell_mean deltas): A (cell-weighted over x, y), B, A+B with features (1,0), (0,1), (1,1):
    # 3 points, 2 features + intercept, so α = 0 interpolates them and C (A's text) is predicted as A's delta
    deltas = {"A": np.array([-0.75, 0, 0.25, 0.5]), "B": np.array([0, -0.8, 0, 0.5]),
              "A+B": np.array([-0.7, -0.7, 1.0, 1.0])}
    ctx = m.predict_shift("D", "x")
    assert np.allclose(ctx, [-0.4, -0.5, 0.5, 0.5]) and m.notes["D|x"] == "no gene text: the cell-type mean"
    y_mean = np.mean(list(deltas.values()), axis=0)
    assert np.allclose(m.predict_shift("C", "x") - ctx, deltas["A"] - y_mean)
    auto = _fit("knowledge_ridge", train, knowledge=knowledge)
    assert auto.alpha in (0.1, 1.0, 10.0, 100.0, 1000.0)
