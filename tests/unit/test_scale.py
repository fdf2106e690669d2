"""Scale: rows read from disk on demand (RowReader), the streaming screen writer, the scorer reading one group at
a time, and deep-model training whose memory does not grow with the number of training cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import H5adReader, H5adWriter, RowReader
from pertpipe.data.simulate import ScreenParams, count_statistics, write_screen
from pertpipe.evaluation.de import Expression
from pertpipe.evaluation.scoring import score_local
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.predict import write_predictions

REPO = Path(__file__).resolve().parents[2]


def _write(path, X, *, counts=None, obs=None):
    n, g = X.shape
    obs = obs if obs is not None else pd.DataFrame(index=[f"c{i}" for i in range(n)])
    with H5adWriter(path, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(g)]),
                    layers={"counts": np.int32} if counts is not None else None) as w:
        if counts is not None:
            w.append(X, counts=counts)
        else:
            w.append(X)


# -- RowReader ------------------------------------------------------------------------------------------------
def test_row_reader_returns_the_rows_asked_for_in_order_with_repeats(tmp_path):
    X = sp.random(300, 25, density=0.3, format="csr", random_state=0, dtype=np.float32)
    _write(tmp_path / "a.h5ad", X)
    rng = np.random.default_rng(1)
    for gap in (0, 3, 1 << 16):  # one slice per row, merged neighbours, everything in one slice
        r = RowReader(tmp_path / "a.h5ad", gap=gap)
        assert r.shape == (300, 25) and len(r) == 300
        for idx in (np.array([7, 2, 2, 299, 0]), rng.choice(300, 120), np.arange(40, 90), np.array([], int)):
            got = r[idx]
            assert isinstance(got, sp.csr_matrix) and got.shape == (len(idx), 25)
            np.testing.assert_array_equal(got.toarray(), X[idx].toarray())
        np.testing.assert_array_equal(r[-1].toarray(), X[[299]].toarray())
        np.testing.assert_array_equal(r[10:13].toarray(), X[10:13].toarray())
    with pytest.raises(IndexError):
        RowReader(tmp_path / "a.h5ad")[[300]]


def test_row_reader_subset_layer_log1p_and_dense_files(tmp_path, adata_factory):
    counts = sp.random(200, 12, density=0.4, format="csr", random_state=2) * 20
    counts = counts.astype(np.int32)
    X = counts.astype(np.float32)
    X.data = np.log1p(X.data)
    _write(tmp_path / "b.h5ad", X, counts=counts)
    sub = np.array([150, 3, 77, 9])
    r = RowReader(tmp_path / "b.h5ad", "counts", rows=sub, transform="log1p")
    assert r.shape == (4, 12) and r.dtype == np.float32
    np.testing.assert_allclose(r[[3, 0, 0]].toarray(), np.log1p(counts[sub[[3, 0, 0]]].toarray()), rtol=1e-6)
    np.testing.assert_array_equal(RowReader(tmp_path / "b.h5ad", "counts", rows=sub)[[1]].toarray(),
                                  counts[[3]].toarray())
    a = adata_factory(n_cells=30, n_genes=6)
    a.X = a.X.toarray()
    a.write_h5ad(tmp_path / "dense.h5ad")
    np.testing.assert_array_equal(RowReader(tmp_path / "dense.h5ad")[[5, 1, 5]].toarray(), a.X[[5, 1, 5]])
    with pytest.raises(IndexError):
        RowReader(tmp_path / "b.h5ad", rows=np.array([0, 200]))


# -- the streaming screen writer ------------------------------------------------------------------------------
def test_write_screen_has_the_requested_shape_labels_and_depth(tmp_path):
    genes = [f"G{i}" for i in range(3000)]
    targets = ["G5", "G17", "G400"]
    p = ScreenParams(n_cells=1500, n_controls=300, chunk_size=400, umi_per_cell=20_000)
    info = write_screen(tmp_path / "s.h5ad", genes, targets, seed=3, params=p, cell_type="H1")
    with H5adReader(tmp_path / "s.h5ad") as r:
        obs = r.obs
        assert (r.n_obs, r.n_vars) == (1500, 3000) and list(r.var_names[:2]) == ["G0", "G1"]
        assert r.dtype() == np.int32
        counts = r.read_masked()
    assert (obs.target_gene == CONTROL_LABEL).sum() == 300
    assert obs.target_gene.value_counts().loc[targets].tolist() == [400, 400, 400]
    assert set(obs.batch) == {"b0", "b1", "b2", "b3"} and set(obs.cell_type) == {"H1"}
    assert obs.target_gene.iloc[:400].nunique() == 4  # random order, not blocks
    stats = count_statistics(counts)
    assert 15_000 < stats["umi_median"] < 25_000 and stats["detected_median"] > 500
    assert info["first_chunk"]["cells"] == 400
    # the knockdown: each target's own gene is lower in its cells than in the controls
    for t in targets:
        j = genes.index(t)
        x = counts[:, j].toarray().ravel()
        assert x[(obs.target_gene == t).to_numpy()].mean() < 0.5 * x[(obs.target_gene == CONTROL_LABEL).to_numpy()].mean()
    # the same seed writes the same file
    write_screen(tmp_path / "s2.h5ad", genes, targets, seed=3, params=p, cell_type="H1")
    with H5adReader(tmp_path / "s2.h5ad") as r2:
        assert (r2.read_masked() != counts).nnz == 0


# -- the scorer streams ----------------------------------------------------------------------------------------
def _scored_pair(tmp_path):
    rng = np.random.default_rng(4)
    G = 40
    labels = rng.permutation(np.array([CONTROL_LABEL] * 60 + ["g1"] * 30 + ["g2"] * 30 + ["g3"] * 30))
    obs = pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(labels))])
    base = rng.gamma(2.0, 1.0, G)
    shift = {CONTROL_LABEL: 0, "g1": 1.5, "g2": -0.7, "g3": 0.3}

    def sample(noise):
        lam = np.array([base * np.exp(shift[lab] * (np.arange(G) < 10)) for lab in labels])
        return sp.csr_matrix(np.log1p(rng.poisson(lam * noise)).astype(np.float32))

    _write(tmp_path / "truth.h5ad", sample(1.0), obs=obs)
    _write(tmp_path / "pred.h5ad", sample(1.1), obs=obs)
    return tmp_path / "pred.h5ad", tmp_path / "truth.h5ad"


def test_local_scorer_reads_files_group_by_group_and_agrees_with_in_memory(tmp_path):
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.scoring import ScoringContext

    pred, truth = _scored_pair(tmp_path)
    real, pr = Expression.read(truth), Expression.read(pred)
    assert isinstance(real.X, RowReader) and isinstance(pr.X, RowReader)  # nothing loaded whole
    table, agg = score_local(pred, truth)
    with H5adReader(truth) as r:
        mem_real = Expression(r.read_masked(), r.obs["target_gene"].astype(str).to_numpy(), np.asarray(r.var_names))
    with H5adReader(pred) as r:
        mem_pred = Expression(r.read_masked(), r.obs["target_gene"].astype(str).to_numpy(), np.asarray(r.var_names))
    ctx = ScoringContext(mem_real, mem_pred)
    for m in metrics():
        values = m.local(ctx)
        for p, v in values.items():
            got = table.set_index("perturbation").loc[p, m.column]
            assert got == pytest.approx(v, abs=1e-12), (m.name, p)
    assert sorted(table.perturbation) == ["g1", "g2", "g3"] and agg["mae"] > 0
    groups = real.groups()
    assert sorted(groups) == sorted([CONTROL_LABEL, "g1", "g2", "g3"])
    assert all((real.labels[rows] == name).all() for name, rows in groups.items())


# -- training memory does not follow the number of cells -----------------------------------------------------
_CHILD = r"""
import json, resource, sys
import numpy as np, torch
from pertpipe.models import build_model
from pertpipe.models.inputs import ModelInputs
path, model = sys.argv[1], sys.argv[2]
from pertpipe.core.h5io import H5adReader
with H5adReader(path) as r:
    genes = [str(g) for g in r.var_names]
rng = np.random.default_rng(0)
K, D = 3, 16
knowledge = {"genes": genes, "facets": ["a", "b", "c"], "tensor": torch.tensor(rng.normal(size=(len(genes), K, D)),
             dtype=torch.float32), "mask": torch.ones(len(genes), K)}
params = {"dygenept": {"epochs": 2, "steps_per_epoch": 3, "hidden": 32, "device": "cpu", "pca_cells": 1000,
                       "shrinkage": "none"},
          "cfmvc": {"vae_epochs": 2, "flow_epochs": 2, "steps_per_epoch": 3, "hidden": 32, "flow_hidden": 32,
                    "d_int": 8, "vae_batch": 128, "device": "cpu", "shrinkage": "none"}}[model]
m = build_model(model, params, seed=0)
log = m.fit(ModelInputs(path, knowledge=knowledge, chunk_size=2000))
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "cells": log.get("cells")}))
"""


def _training_split(path: Path, n_cells: int, n_genes: int = 2000) -> None:
    """A training split in the stage-1 contract (log1p X + raw counts), streamed from write_screen."""
    genes = [f"G{i}" for i in range(n_genes)]
    raw = path.with_suffix(".raw.h5ad")
    write_screen(raw, genes, [f"G{i}" for i in range(10, 30)], seed=1,
                 params=ScreenParams(n_cells=n_cells, n_controls=n_cells // 5, umi_per_cell=8000, base_sd=1.2,
                                     chunk_size=5000), cell_type="H1")
    with H5adReader(raw) as r, H5adWriter(path, obs=r.obs, var=r.var, layers={"counts": np.int32}) as w:
        for _s, _e, c in r.iter_chunks(5000):
            x = c.astype(np.float32).multiply(1e4 / np.asarray(c.sum(1))).tocsr().astype(np.float32)
            x.data = np.log1p(x.data)
            w.append(x, counts=c)
    raw.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cfmvc", "dygenept"])
def test_training_memory_does_not_grow_with_the_number_of_cells(tmp_path, model):
    """2x the training cells -> <= 1.2x the training process's peak RSS. The split is big enough that holding
    it (or the two CSR copies CFM-VC used to keep) in memory would break the bound: 20k cells x 2,000 genes at
    ~40 % non-zero are ~130 MB per CSR copy."""
    peaks = {}
    for n in (20_000, 40_000):
        path = tmp_path / f"train_{n}.h5ad"
        _training_split(path, n)
        with H5adReader(path) as r:
            nnz = r.nnz()
        assert nnz / n > 600  # dense enough for the bound to mean something
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), model], capture_output=True, text=True,
                             cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
        path.unlink()
    assert peaks[40_000] <= 1.2 * peaks[20_000], peaks


def test_randomized_principal_axes_match_the_exact_svd(monkeypatch):
    import pertpipe.core.pca as pca

    rng = np.random.default_rng(0)
    low = (rng.normal(size=(600, 12)) * np.geomspace(30, 1, 12)) @ rng.normal(size=(12, 900))
    x = (low / 10 + rng.normal(size=(600, 900)) * 0.1).astype(np.float32)
    x -= x.mean(0)
    exact = pca.top_components(x, 8)
    monkeypatch.setattr(pca, "EXACT_BELOW", 1)  # force the randomized path on this small matrix
    fast = pca.top_components(x, 8, seed=3)
    assert fast.shape == (8, 900)
    np.testing.assert_allclose(fast, exact, atol=1e-5)  # same axes, same signs
    np.testing.assert_allclose(fast @ fast.T, np.eye(8), atol=1e-6)
    np.testing.assert_array_equal(pca.top_components(x, 8, seed=3), fast)  # deterministic


# -- the prediction writer: memory follows a block of cells, not the largest perturbation ---------------------
_PREDICT_CHILD = r"""
import json, resource, sys
import pandas as pd
from pertpipe.models import build_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.predict import write_predictions
path, dest, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = build_model("cell_mean", {}, seed=0)
m.fit(ModelInputs(path, chunk_size=2000))
tpl = pd.DataFrame({"target_gene": ["G12"], "cell_type": ["H1"], "batch": ["b0"], "n_cells": [n]})
log = write_predictions(m, tpl, path, dest, block_entries=int(sys.argv[4]))
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "block_cells": log["block_cells"]}))
"""


@pytest.mark.slow
def test_prediction_writer_memory_follows_a_block_not_the_perturbation(tmp_path):
    """One perturbation of 4,000 then 8,000 predicted cells x 3,000 genes (a float64 copy of the larger is
    192 MB): the writer's peak RSS grows <= 1.1x, because the cells are predicted 500 at a time."""
    path = tmp_path / "train.h5ad"
    _training_split(path, 3000, n_genes=3000)
    with H5adReader(path) as r:
        batch = str(r.obs["batch"].iloc[0])
    child = _PREDICT_CHILD.replace('"b0"', repr(batch))
    peaks = {}
    for n in (4000, 8000):
        out = subprocess.run([sys.executable, "-c", child, str(path), str(tmp_path / f"p{n}.h5ad"), str(n),
                              str(500 * 3000)], capture_output=True, text=True, cwd=REPO,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        assert rec["block_cells"] == 500
        peaks[n] = rec["maxrss_kb"] / 1024
        with H5adReader(tmp_path / f"p{n}.h5ad") as r:
            assert (r.n_obs, r.n_vars) == (n, 3000)
    assert peaks[8000] <= 1.1 * peaks[4000], peaks


def test_prediction_file_is_the_same_whatever_the_block_size(tmp_path):
    """Blocks of 3 cells, or whole rows: the same control draw and the same values, cell for cell (linear model,
    held-out targets and a control row)."""
    import anndata as ad

    from pertpipe.models import build_model

    path = tmp_path / "train.h5ad"
    _training_split(path, 1200, n_genes=300)
    with H5adReader(path) as r:
        batch = str(r.obs["batch"].iloc[0])
    tpl = pd.DataFrame({"target_gene": ["G40", "G41", CONTROL_LABEL], "cell_type": "H1", "batch": batch,
                        "n_cells": [40, 25, 30]})
    m = build_model("linear", {}, seed=0)
    m.fit(ModelInputs(path, chunk_size=500))
    whole = write_predictions(m, tpl, path, tmp_path / "whole.h5ad")
    small = write_predictions(m, tpl, path, tmp_path / "small.h5ad", block_entries=3 * len(m.genes))
    assert small["block_cells"] == 3 and whole["block_cells"] > 40
    a, b = ad.read_h5ad(tmp_path / "whole.h5ad"), ad.read_h5ad(tmp_path / "small.h5ad")
    assert a.shape == b.shape == (95, 300)
    np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
    assert (a.obs == b.obs).all().all()
    assert np.ptp(np.asarray(a.X)[:40], axis=0).max() > 0  # cells differ: drawn controls, not one mean row
