"""The contract validator on files produced by stage 1 and on broken ones."""

import h5py
import numpy as np
import pytest

from pertpipe.data.adapters import get_adapter
from pertpipe.data.genes import align_genes
from pertpipe.data.standardize import standardize
from pertpipe.data.validate import validate_h5ad
from pertpipe.errors import ContractError


@pytest.fixture
def aligned(tmp_path, adata_factory):
    a = adata_factory(n_cells=30, n_genes=6)
    a.write_h5ad(tmp_path / "raw.h5ad")
    standardize(tmp_path / "raw.h5ad", tmp_path / "std.h5ad", adapter=get_adapter("canonical"),
                uns={"pertpipe": {"stage": "t"}})
    universe = [f"GENE{i}" for i in range(1, 8)]
    align_genes(tmp_path / "std.h5ad", tmp_path / "al.h5ad", universe=universe, uns={"pertpipe": {"stage": "t"}})
    return tmp_path / "al.h5ad", universe


def test_valid_file_figures(aligned):
    path, universe = aligned
    fig = validate_h5ad(path, universe=universe)
    assert fig["shape"] == [30, 7] and fig["x_dtype"] == "float32" and fig["gene_order_match"] == 1.0
    assert fig["log1p_check"].startswith("ok") and fig["counts_layer"] is True and fig["n_control_cells"] > 0


def test_wrong_order_is_reported(aligned):
    path, universe = aligned
    with pytest.raises(ContractError) as err:
        validate_h5ad(path, universe=universe[::-1])
    assert "gene order matches the universe at" in str(err.value) and "align_genes" in str(err.value)


def test_counts_in_x_are_caught(aligned):
    path, universe = aligned
    with h5py.File(path, "r+") as f:
        f["X/data"][0] = 250.0
    with pytest.raises(ContractError, match="not log1p-like"):
        validate_h5ad(path, universe=universe)


def test_missing_obs_column(aligned):
    path, _ = aligned
    with h5py.File(path, "r+") as f:
        del f["obs/batch"]
        order = [c for c in f["obs"].attrs["column-order"] if c != "batch"]
        f["obs"].attrs["column-order"] = np.array(order, dtype=object)
    with pytest.raises(ContractError, match=r"obs\['batch'\]"):
        validate_h5ad(path)
