"""standardize: adapters, scale detection, bad input with clear messages and no partial output."""

import anndata as ad
import numpy as np
import pytest

from pertpipe.data.adapters import get_adapter
from pertpipe.data.standardize import standardize
from pertpipe.errors import ConfigError, ContractError


def _run(tmp_path, a, adapter="canonical", **kw):
    src = tmp_path / "src.h5ad"
    a.write_h5ad(src)
    dest = tmp_path / "out.h5ad"
    opts = kw.pop("adapter_options", None)
    return standardize(src, dest, adapter=get_adapter(adapter, opts), chunk_size=7, **kw), dest


def test_counts_are_normalised_and_kept(tmp_path, adata_factory):
    a = adata_factory(counts=True)
    summary, dest = _run(tmp_path, a)
    b = ad.read_h5ad(dest)
    x = a.X.toarray()
    expect = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(b.X.toarray(), expect, rtol=1e-5)
    np.testing.assert_array_equal(b.layers["counts"].toarray(), x)
    assert summary["scale_detected"] == "counts" and summary["counts_layer"]
    assert b.uns["pertpipe"]["standardize"]["scale"] == "counts"
    assert set(b.obs.columns) >= {"target_gene", "batch", "cell_type"}


def test_log1p_input_is_kept_as_is(tmp_path, adata_factory):
    a = adata_factory(counts=False)
    summary, dest = _run(tmp_path, a)
    np.testing.assert_allclose(ad.read_h5ad(dest).X.toarray(), a.X.toarray(), rtol=1e-6)
    assert summary["scale_detected"] == "log1p" and not summary["counts_layer"]


def test_counts_where_log1p_expected(tmp_path, adata_factory):
    a = adata_factory(counts=True)
    a.X[0, 0] = 500
    with pytest.raises(ContractError) as err:
        _run(tmp_path, a, input_scale="log1p")
    assert "these are counts" in str(err.value) and "input_scale: counts" in str(err.value)
    assert not (tmp_path / "out.h5ad").exists()


def test_perturbench_labels_and_filter(tmp_path, adata_factory):
    a = adata_factory(counts=False, pert_col="perturbation", control="control", targets=("KLF1", "KLF1+MAP2K6"))
    a.obs["dataset"] = np.where(np.arange(a.n_obs) < 30, "norman19", "other")
    summary, dest = _run(tmp_path, a, adapter="perturbench", obs_filter={"dataset": ["norman19"]})
    b = ad.read_h5ad(dest)
    assert b.n_obs == 30 and summary["n_cells"] == 30
    assert set(b.obs["target_gene"]) == {"non-targeting", "KLF1", "KLF1+MAP2K6"}
    assert set(b.obs["batch"]) == {"norman19"}


def test_gears_conditions(tmp_path, adata_factory):
    a = adata_factory(counts=False, pert_col="condition", control="ctrl", targets=("KLF1+ctrl", "ctrl+SET", "A+B"))
    a.var["gene_name"] = [f"SYM{i}" for i in range(a.n_vars)]
    _, dest = _run(tmp_path, a, adapter="gears", adapter_options={"default_cell_type": "K562"})
    b = ad.read_h5ad(dest)
    assert set(b.obs["target_gene"]) == {"non-targeting", "KLF1", "SET", "A+B"}
    assert b.var_names[0] == "SYM0"


@pytest.mark.parametrize("case, field, words", [
    ("missing_col", "obs['target_gene']", "perturbation column missing"),
    ("no_controls", "obs['target_gene']", "no control cells"),
    ("negative", "X", "negative values"),
    ("nan", "X", "NaN/inf"),
    ("dup_genes", "var_names", "duplicate gene names"),
    ("unlabelled", "obs['target_gene']", "no perturbation label"),
    ("all_control", "obs['target_gene']", "no perturbed cells: every labelled cell is a control"),
    ("dup_cells", "obs_names", "duplicated cell barcodes"),
    ("newline_label", "obs['target_gene']", "labels contain control characters"),
])
def test_bad_input_messages(tmp_path, adata_factory, case, field, words):
    a = adata_factory(counts=True)
    if case == "missing_col":
        a.obs = a.obs.drop(columns="target_gene")
    elif case == "no_controls":
        a.obs["target_gene"] = "GENE1"
    elif case == "negative":
        x = a.X.toarray()
        x[40, 2] = -1
        a.X = type(a.X)(x)
    elif case == "nan":
        a.X.data[5] = np.nan
    elif case == "dup_genes":
        a.var_names = ["GENE1"] * 2 + [f"GENE{i}" for i in range(2, a.n_vars)]
    elif case == "unlabelled":
        a.obs.loc[a.obs_names[3], "target_gene"] = ""
    elif case == "all_control":
        a.obs["target_gene"] = "non-targeting"
    elif case == "dup_cells":
        a.obs_names = ["c0", "c0"] + list(a.obs_names[2:])
    elif case == "newline_label":
        a.obs.loc[a.obs_names[1], "target_gene"] = "GENE1\nGENE2"
    with pytest.raises(ContractError) as err:
        _run(tmp_path, a)
    msg = str(err.value)
    assert f"field '{field}'" in msg and words in msg and "Fix:" in msg and "src.h5ad" in msg
    assert not (tmp_path / "out.h5ad").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src.h5ad"]  # nothing half-written
    if case != "missing_col":  # `pertpipe inspect` warns about the same problem, in the same words
        from pertpipe.data.inspect import inspect_h5ad

        problem = msg.split(f"field '{field}': ", 1)[1].split(". Fix:")[0]
        assert any(problem in w for w in inspect_h5ad(tmp_path / "src.h5ad")["warnings"]), case


def test_duplicated_barcodes_can_be_made_unique(tmp_path, adata_factory):
    a = adata_factory(counts=True)
    a.obs_names = ["c0", "c0", "c0"] + list(a.obs_names[3:])
    summary, dest = _run(tmp_path, a, duplicate_cells="make_unique")
    b = ad.read_h5ad(dest)
    assert list(b.obs_names[:3]) == ["c0", "c0-1", "c0-2"] and b.obs_names.is_unique
    assert summary["duplicate_cells_renamed"] == 2


def test_duplicate_genes_keep_first(tmp_path, adata_factory):
    a = adata_factory(counts=True)
    a.var_names = ["GENE1", "GENE1"] + [f"GENE{i}" for i in range(3, a.n_vars + 1)]
    summary, dest = _run(tmp_path, a, duplicate_genes="first")
    b = ad.read_h5ad(dest)
    assert summary["duplicate_genes_dropped"] == 1 and b.n_vars == a.n_vars - 1 and b.var_names.is_unique


def test_unknown_adapter_and_option():
    with pytest.raises(ConfigError, match="unknown adapter 'nope'"):
        get_adapter("nope")
    with pytest.raises(ConfigError, match="unknown adapter_options"):
        get_adapter("gears", {"colour": "red"})


def test_spatial_coordinates_are_carried_through_stage_1(tmp_path, adata_factory):
    from pertpipe.data.genes import align_genes
    from pertpipe.data.split import make_split, write_split

    a = adata_factory(counts=True)
    a.obsm["spatial"] = np.arange(a.n_obs * 2, dtype=float).reshape(-1, 2)
    a.obsm["X_pca"] = np.zeros((a.n_obs, 3))  # not carried: only obsm["spatial"] is part of the contract
    _summary, dest = _run(tmp_path, a)
    b = ad.read_h5ad(dest)
    np.testing.assert_array_equal(b.obsm["spatial"], a.obsm["spatial"])
    assert "X_pca" not in b.obsm
    align_genes(dest, tmp_path / "aligned.h5ad", universe=list(a.var_names)[::-1], chunk_size=7)
    c = ad.read_h5ad(tmp_path / "aligned.h5ad")
    np.testing.assert_array_equal(c.obsm["spatial"], a.obsm["spatial"])
    res = make_split(c.obs, strategy="random_unseen", seed=0, fraction=0.3)
    write_split(tmp_path / "aligned.h5ad", tmp_path / "train.h5ad", tmp_path / "val.h5ad", res, chunk_size=7)
    tr, va = ad.read_h5ad(tmp_path / "train.h5ad"), ad.read_h5ad(tmp_path / "val.h5ad")
    by_cell = dict(zip(a.obs_names, a.obsm["spatial"].tolist()))
    assert tr.obsm["spatial"].tolist() == [by_cell[n] for n in tr.obs_names]
    assert va.obsm["spatial"].tolist() == [by_cell[n] for n in va.obs_names]


def test_nan_spatial_coordinates_are_refused(tmp_path, adata_factory):
    a = adata_factory(counts=True)
    a.obsm["spatial"] = np.zeros((a.n_obs, 2))
    a.obsm["spatial"][3, 1] = np.nan
    with pytest.raises(ContractError, match=r"obsm\['spatial'\].*NaN"):
        _run(tmp_path, a)
    assert not (tmp_path / "out.h5ad").exists()
