"""The local scorer on hand-computed cases, and its Mann-Whitney U against scipy."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu

from pertpipe.evaluation.de import Expression, ReferenceIndex, mannwhitneyu_sparse, top_de_genes
from pertpipe.evaluation.metrics import des_scores, mae_pds_scores


def test_mwu_matches_scipy_with_ties_and_zeros():
    rng = np.random.default_rng(0)
    x = rng.poisson(0.8, size=(40, 30)).astype(float) * rng.integers(0, 2, size=(40, 30))
    y = rng.poisson(1.2, size=(70, 30)).astype(float)
    x[:, 0] = 0
    y[:, 0] = 0  # all zeros: no evidence, p = 1
    x[:, 5] += 50.0  # group values far beyond the reference's range
    u, p = mannwhitneyu_sparse(sp.csr_matrix(x), sp.csr_matrix(y))
    ref = mannwhitneyu(x[:, 1:], y[:, 1:], axis=0, method="asymptotic", use_continuity=True)
    np.testing.assert_allclose(u[1:], ref.statistic)
    np.testing.assert_allclose(p[1:], ref.pvalue, rtol=1e-12)
    assert p[0] == 1.0


@pytest.mark.parametrize("block_entries", [1, 70 * 7, 10 ** 6])
def test_mwu_gene_blocks_give_the_same_test(block_entries):
    """The reference is sorted and tested a block of genes at a time (1 gene, 7 genes, all 30): same U and p."""
    rng = np.random.default_rng(1)
    x = (rng.poisson(0.8, size=(40, 30)) * rng.integers(0, 2, size=(40, 30))).astype(np.float32)
    y = np.log1p(rng.poisson(1.2, size=(70, 30))).astype(np.float32)  # float32 data, as read from a file
    x[:, 3] = y[:40, 3]  # values shared with the reference: pooled ties
    x[:, 7] += 9.0
    index = ReferenceIndex(sp.csr_matrix(y), block_entries=block_entries)
    assert index.vals.dtype == np.float32 and len(index.vals) == np.count_nonzero(y)
    u, p = index.test(sp.csr_matrix(x))
    ref = mannwhitneyu(x.astype(np.float64), y.astype(np.float64), axis=0, method="asymptotic",
                       use_continuity=True)
    np.testing.assert_allclose(u, ref.statistic)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)
    with pytest.raises(ValueError, match="group has 29 genes, the reference 30"):
        index.test(sp.csr_matrix(x[:, :29]))


@pytest.mark.parametrize("dense", [True, False])
def test_reference_built_from_row_chunks_is_the_same_index(dense):
    """Two passes over uneven row chunks (dense predicted cells or CSR truth) = the index of the whole matrix."""
    rng = np.random.default_rng(2)
    y = np.log1p(rng.poisson(0.7, size=(53, 25))).astype(np.float32)
    y[:, 4] = 0.0  # a gene with no values
    whole = ReferenceIndex(sp.csr_matrix(y))
    cuts = [0, 1, 20, 21, 53]
    blocks = [y[a:b] if dense else sp.csr_matrix(y[a:b]) for a, b in zip(cuts, cuts[1:])]
    chunked = ReferenceIndex.from_chunks(lambda: iter(blocks), block_entries=53 * 3)
    for attr in ("vals", "gene_start", "tie", "nzero"):
        np.testing.assert_array_equal(getattr(chunked, attr), getattr(whole, attr), err_msg=attr)
    np.testing.assert_allclose(chunked.col_sum, y.sum(axis=0, dtype=np.float64), rtol=1e-12)
    assert chunked.n2 == 53 and chunked.vals.dtype == np.float32
    x = sp.csr_matrix(np.log1p(rng.poisson(1.1, size=(17, 25))).astype(np.float32))
    for a, b in zip(chunked.test(x), whole.test(x)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="reference chunk has 24 genes, the first 25"):
        ReferenceIndex.from_chunks(lambda: iter([y[:5], y[5:, :24]]))


def _expr(rows: dict[str, list[list[float]]], genes: list[str]) -> Expression:
    labels, X = [], []
    for lab, cells in rows.items():
        labels += [lab] * len(cells)
        X += cells
    return Expression(sp.csr_matrix(np.array(X, dtype=float)), np.array(labels), np.array(genes))


def test_mae_and_known_pds_rank():
    genes = ["A", "B", "C"]
    real = _expr({"non-targeting": [[1, 1, 1]], "A": [[0, 1, 1]], "B": [[1, 3, 1]], "C": [[1, 1, 4]]}, genes)
    # pred for A looks like B's real effect (+2 on gene B), B and C are right
    pred = _expr({"non-targeting": [[1, 1, 1]], "A": [[1, 3, 1]], "B": [[1, 3, 1]], "C": [[1, 1, 4]]}, genes)
    mae, pds = mae_pds_scores(real, pred)
    assert mae == {"A": pytest.approx(1.0), "B": 0.0, "C": 0.0}  # mean(|[0,1,1] - [1,3,1]|)
    # A: distances (target column A excluded) to real effects A=(0,0), B=(2,0), C=(0,3) -> [2, 0, 5]: rank 1 of 3
    assert pds["A"] == pytest.approx(1 - 1 / 3)
    assert pds["B"] == 1.0 and pds["C"] == 1.0


def test_known_de_overlap():
    lfc = np.array([3.0, -2.0, 0.5, 1.0, -4.0])
    fdr = np.array([0.01, 0.01, 0.01, 0.2, 0.01])
    real = {"P": {"lfc": lfc, "fdr": fdr}}
    assert top_de_genes(real["P"]).tolist() == [4, 0, 1, 2]  # |lfc| descending, significant only
    # predicted: significant 0, 3, 4 ranked [4, 0, 3]; N = 4 real genes -> top-4 of pred has 3: overlap {4, 0} = 2/4
    pred = {"P": {"lfc": np.array([2.0, 0.0, 0.0, 1.5, -5.0]), "fdr": np.array([0.01, 0.9, 0.9, 0.01, 0.01])}}
    assert des_scores(real, pred) == {"P": 0.5}
    none = {"P": {"lfc": lfc, "fdr": np.ones(5)}}
    assert des_scores(real, none) == {"P": 0.0}


def test_variance_ratio_compares_per_cell_spread(tmp_path):
    import scipy.sparse as sp

    from pertpipe.evaluation.metrics import variance_ratio

    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"target_gene": ["non-targeting"] * 50 + ["A"] * 50 + ["B"] * 50})
    truth = rng.normal(2, 1, size=(150, 20)).clip(0)
    ad.AnnData(sp.csr_matrix(truth.astype(np.float32)), obs=obs).write_h5ad(tmp_path / "t.h5ad")
    means_only = np.vstack([np.tile(truth[i:i + 50].mean(0), (50, 1)) for i in (0, 50, 100)])
    ad.AnnData(sp.csr_matrix(means_only.astype(np.float32)), obs=obs).write_h5ad(tmp_path / "m.h5ad")
    doubled = 2 + (truth - 2) * np.sqrt(2)
    ad.AnnData(sp.csr_matrix(doubled.astype(np.float32)), obs=obs).write_h5ad(tmp_path / "d.h5ad")
    same = variance_ratio(tmp_path / "t.h5ad", tmp_path / "t.h5ad")
    assert same["median"] == pytest.approx(1.0) and set(same["per_perturbation"]) == {"A", "B"}
    assert variance_ratio(tmp_path / "m.h5ad", tmp_path / "t.h5ad")["max"] < 1e-6
    assert variance_ratio(tmp_path / "d.h5ad", tmp_path / "t.h5ad")["median"] == pytest.approx(2.0, rel=1e-3)
