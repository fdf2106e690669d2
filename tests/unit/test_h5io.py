"""Chunked h5ad reading/writing: round trip, layers, atomicity."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.core.h5io import H5adReader, H5adWriter


def test_roundtrip_in_chunks_equals_source(tmp_path, adata_factory):
    a = adata_factory(n_cells=57, n_genes=13)
    a.layers["counts"] = a.X.copy()
    a.write_h5ad(tmp_path / "src.h5ad")
    with H5adReader(tmp_path / "src.h5ad") as r:
        assert (r.n_obs, r.n_vars, r.encoding()) == (57, 13, "csr_matrix")
        with H5adWriter(tmp_path / "out.h5ad", obs=r.obs, var=r.var, uns={"k": 1},
                        layers={"counts": np.int32}) as w:
            for _s, _e, block in r.iter_chunks(10):
                w.append(block, counts=block.astype(np.int32))
    b = ad.read_h5ad(tmp_path / "out.h5ad")
    assert b.X.dtype == np.float32 and sp.issparse(b.X)
    np.testing.assert_array_equal(b.X.toarray(), a.X.toarray())
    np.testing.assert_array_equal(b.layers["counts"].toarray(), a.X.toarray())
    assert b.layers["counts"].dtype == np.int32
    assert list(b.obs_names) == list(a.obs_names) and b.uns["k"] == 1


def test_dense_source_and_row_mask(tmp_path, adata_factory):
    a = adata_factory(n_cells=20, n_genes=5)
    a.X = a.X.toarray()
    a.write_h5ad(tmp_path / "dense.h5ad")
    mask = np.arange(20) % 3 == 0
    with H5adReader(tmp_path / "dense.h5ad") as r:
        assert r.encoding() == "array"
        rows = sp.vstack([b for _s, _e, b in r.iter_chunks(7, rows=mask)])
    np.testing.assert_array_equal(rows.toarray(), a.X[mask])


def test_failed_write_leaves_no_file(tmp_path):
    obs = pd.DataFrame(index=["a", "b"])
    var = pd.DataFrame(index=["g"])
    with pytest.raises(RuntimeError):
        with H5adWriter(tmp_path / "x.h5ad", obs=obs, var=var) as w:
            w.append(sp.csr_matrix(np.ones((1, 1), dtype=np.float32)))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # Too few rows for obs is refused at close, also without leaving a file.
    with pytest.raises(ValueError, match="wrote 1 rows but obs has 2"):
        with H5adWriter(tmp_path / "y.h5ad", obs=obs, var=var) as w:
            w.append(sp.csr_matrix(np.ones((1, 1), dtype=np.float32)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_outputs_follow_the_process_umask(tmp_path, umask, mode):
    import os

    from pertpipe.io import write_text

    old = os.umask(umask)
    try:
        write_text("x", tmp_path / "out.txt")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


@pytest.mark.parametrize("shape", [(0, 5), (1, 7), (300, 40), (513, 3)])
def test_dense_to_csr_equals_scipy(shape):
    """Dense rows become CSR through preallocated arrays (a few rows at a time): scipy's result, exactly."""
    from pertpipe.core.h5io import dense_to_csr

    rng = np.random.default_rng(0)
    x = (rng.random(shape) * (rng.random(shape) < 0.3)).astype(np.float32)
    a, b = dense_to_csr(x, rows_per_step=7), sp.csr_matrix(x)
    assert a.shape == b.shape and a.dtype == np.float32 and a.indices.dtype == np.int32
    assert a.nnz == b.nnz and (a != b).nnz == 0 and np.array_equal(a.indptr, b.indptr)


def test_a_truncated_file_is_called_cut_short_not_told_to_re_download(tmp_path):
    """A user's own .h5ad copied half-way: the message says it was cut short and how to fix an own file (copy it
    again), not only "re-download" (there is nothing to download)."""
    import anndata as ad
    import numpy as np
    import pytest

    from pertpipe.core.h5io import H5adReader
    from pertpipe.errors import ContractError

    ad.AnnData(np.ones((50, 20), np.float32)).write_h5ad(tmp_path / "full.h5ad")
    data = (tmp_path / "full.h5ad").read_bytes()
    (tmp_path / "mine.h5ad").write_bytes(data[:len(data) // 2])
    with pytest.raises(ContractError) as err:
        H5adReader(tmp_path / "mine.h5ad")
    msg = str(err.value)
    assert "mine.h5ad: field 'file': cut short" in msg and "your own file: write or copy it again" in msg
