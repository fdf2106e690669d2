"""VCC 2026 scoring's own parts (pertpipe.evaluation.vcc2026): counts from log1p predictions with library sizes of
matching control cells, the truth's counts, and the clear error where the data have none."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.errors import ContractError
from pertpipe.evaluation import vcc2026


def _train(path, counts=True):
    rng = np.random.default_rng(0)
    c = rng.poisson(2.0, size=(6, 5)).astype(np.float32)
    c[:, 0] += 1
    lib = c.sum(1, keepdims=True)
    x = np.log1p(c / lib * 1e4)
    obs = pd.DataFrame({"target_gene": ["non-targeting"] * 4 + ["A"] * 2, "cell_type": ["x", "x", "y", "y", "x", "y"],
                        "batch": "b"}, index=[f"c{i}" for i in range(6)])
    a = ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(5)]))
    if counts:
        a.layers["counts"] = sp.csr_matrix(c)
    a.write_h5ad(path)
    return c, x, lib.ravel()


def test_library_ratios_and_counts_round_trip(tmp_path):
    c, x, lib = _train(tmp_path / "train.h5ad")
    r = vcc2026.library_ratios(tmp_path / "train.h5ad")
    assert list(r["cell_type"]) == ["x", "x", "y", "y"] and np.allclose(r["ratio"], lib[:4] / 1e4)
    # a prediction that is control cell 2's log1p row, in cell type y: its counts come back with a y library size
    pred = ad.AnnData(np.repeat(x[2:3], 3, axis=0).astype(np.float32),
                      obs=pd.DataFrame({"target_gene": "A", "cell_type": "y", "batch": "b"}, index=["p0", "p1", "p2"]),
                      var=pd.DataFrame(index=[f"g{i}" for i in range(5)]))
    pred.write_h5ad(tmp_path / "pred.h5ad")
    out = vcc2026.to_counts(tmp_path / "pred.h5ad", tmp_path / "train.h5ad", tmp_path / "counts.h5ad", seed=0)
    got = ad.read_h5ad(tmp_path / "counts.h5ad").X.toarray()
    assert out["cells"] == 3 and np.array_equal(got, np.rint(got))
    for row in got:  # each row is cell 2's profile at the library size of y's cell 2 or cell 3
        scaled = [np.rint(c[2] / lib[2] * lib[k]) for k in (2, 3)]
        assert any(np.array_equal(row, s) for s in scaled)
    again = vcc2026.to_counts(tmp_path / "pred.h5ad", tmp_path / "train.h5ad", tmp_path / "c2.h5ad", seed=0)
    assert again == out and np.array_equal(ad.read_h5ad(tmp_path / "c2.h5ad").X.toarray(), got)


def test_data_without_counts_get_a_clear_error(tmp_path):
    _train(tmp_path / "train.h5ad", counts=False)
    with pytest.raises(ContractError, match=r"layers\['counts'\].*vcc2025"):
        vcc2026.library_ratios(tmp_path / "train.h5ad")
    with pytest.raises(ContractError, match="VCC 2026 scores counts"):
        vcc2026.write_real_counts(tmp_path / "train.h5ad", tmp_path / "train.h5ad", tmp_path / "real.h5ad")
    assert not (tmp_path / "real.h5ad").exists()
