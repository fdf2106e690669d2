"""Bring-your-own data: guide assignment, user dataset entries, file:// URLs, small held-out targets, inspect."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import REPO, make_adata

from pertpipe.data.adapters import get_adapter
from pertpipe.data.download import fetch
from pertpipe.data.guides import UNASSIGNED, assign_guides
from pertpipe.data.inspect import inspect_h5ad
from pertpipe.data.registry import Registry
from pertpipe.data.split import make_split
from pertpipe.data.standardize import standardize
from pertpipe.errors import ConfigError, ContractError


def test_assign_guides_by_hand():
    counts = np.array([[10, 0, 1],   # top g1 = 10/11 -> A
                       [3, 0, 0],    # 3 UMI < 5 -> unassigned
                       [6, 5, 0],    # 6/11 < 0.8 -> unassigned
                       [0, 0, 0],    # no guide
                       [0, 0, 9]])   # ntc -> its target label
    res = assign_guides(sp.csr_matrix(counts), ["g1", "g2", "ntc1"], ["A", "B", "non-targeting"],
                        min_umi=5, min_fraction=0.8)
    assert list(res.labels) == ["A", UNASSIGNED, UNASSIGNED, UNASSIGNED, "non-targeting"]
    assert list(res.top_guide) == ["g1", "g1", "g1", "", "ntc1"]
    assert res.summary(min_umi=5, min_fraction=0.8)["assigned"] == 2
    assert list(assign_guides(counts, ["g1", "g2", "ntc1"], ["A", "B", "NT"], min_umi=3,
                              min_fraction=0.5).labels) == ["A", "A", "A", UNASSIGNED, "NT"]


def test_standardize_assigns_cells_from_guides_in_obsm(tmp_path):
    a = make_adata(n_cells=40, n_genes=12)
    rng = np.random.default_rng(0)
    g = np.zeros((40, 3))
    g[np.arange(40), rng.integers(0, 3, 40)] = 20
    g[:5] = 0  # five cells without guides
    a.obsm["grna"] = sp.csr_matrix(g)
    a.uns["gids"], a.uns["gtargets"] = np.array(["gA", "gB", "nt1"]), np.array(["GENE1", "GENE2", "NT"])
    del a.obs["target_gene"]
    a.write_h5ad(tmp_path / "g.h5ad")
    adapter = get_adapter("canonical", {"guide_obsm": "grna", "guide_names": "gids", "guide_targets": "gtargets"})
    s = standardize(tmp_path / "g.h5ad", tmp_path / "out.h5ad", adapter=adapter)
    assert s["guide_assignment"]["unassigned"] == 5 and s["n_cells"] == 35 and s["excluded_cells"] == 5
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    expect = np.array(["GENE1", "GENE2", "non-targeting"])[g[5:].argmax(1)]
    assert list(out.obs["target_gene"]) == list(expect)


@pytest.mark.parametrize("case", ["empty", "missing", "not_h5ad", "pert_col", "control", "cell_type_col"])
def test_bad_input_messages_name_file_field_and_fix(tmp_path, case):
    path = tmp_path / "in.h5ad"
    opts: dict = {}
    if case == "empty":
        ad.AnnData(X=sp.csr_matrix((0, 5), dtype=np.float32), var=pd.DataFrame(index=list("ABCDE"))).write_h5ad(path)
    elif case == "not_h5ad":
        path.write_text("gene,cell\nA,1\n")
    elif case != "missing":
        make_adata(pert_col="guide_target", control="NTC").write_h5ad(path)
        opts = {"pert_col": "guide_target"} if case != "pert_col" else {}
        if case == "cell_type_col":
            opts.update(control_values=["NTC"], cell_type_col="cell_line")
    with pytest.raises(ContractError) as err:
        standardize(path, tmp_path / "out.h5ad", adapter=get_adapter("canonical", opts))
    msg = str(err.value)
    assert str(path) in msg and "Fix:" in msg
    expected = {"empty": "the file is empty (0 cells", "missing": "no such file", "not_h5ad": "not a readable HDF5",
                "pert_col": "guide_target (5 distinct)", "control": "labels seen: ['GENE1', 'GENE1+GENE2'",
                "cell_type_col": "cell_type_col names a missing column"}[case]
    assert expected in msg
    if case == "control":
        assert "control_values" in msg
    assert not (tmp_path / "out.h5ad").exists()


def test_user_datasets_and_bare_paths(tmp_path):
    reg = Registry.load(REPO / "resources/datasets.yaml")
    f = tmp_path / "my screen.h5ad"
    make_adata().write_h5ad(f)
    r2 = reg.with_user_datasets({"mine": {"path": str(f), "adapter_options": {"pert_col": "target_gene"}}})
    e = r2.dataset("mine")
    assert e.user and e.path == str(f.resolve()) and e.adapter == "canonical" and e.urls == ()
    r3, name = reg.resolve(str(f))
    assert name == "my_screen" and r3.dataset(name).path == str(f.resolve())
    with pytest.raises(ConfigError, match="neither a dataset name nor an existing file"):
        reg.resolve(str(tmp_path / "absent.h5ad"))
    with pytest.raises(ConfigError, match="already has a dataset of that name"):
        reg.with_user_datasets({"demo": {"path": str(f)}})
    with pytest.raises(ConfigError, match=r"mine.path: .*absent.h5ad does not exist"):
        reg.with_user_datasets({"mine": {"path": str(tmp_path / "absent.h5ad")}})
    with pytest.raises(ConfigError, match="unknown field"):
        reg.with_user_datasets({"mine": {"path": str(f), "colour": 1}})


def test_file_url_is_fetched_and_checksummed(tmp_path):
    src = tmp_path / "src.h5ad"
    make_adata().write_h5ad(src)
    reg = Registry.load(REPO / "resources/datasets.yaml").with_user_datasets({"u": {"url": src.as_uri()}})
    man = fetch(reg.dataset("u"), tmp_path / "dl" / "src.h5ad", cache_dir=tmp_path / "cache")
    assert (tmp_path / "dl/src.h5ad").read_bytes() == src.read_bytes() and man["origin"] == src.as_uri()
    bad = Registry.load(REPO / "resources/datasets.yaml").with_user_datasets(
        {"u": {"url": src.as_uri(), "sha256": "0" * 64}})
    with pytest.raises(Exception, match="sha256 mismatch"):
        fetch(bad.dataset("u"), tmp_path / "dl2" / "src.h5ad", cache_dir=tmp_path / "cache2")
    assert not (tmp_path / "dl2/src.h5ad").exists()


def test_split_drops_small_heldout_targets_and_reports_them():
    labels = ["non-targeting"] * 60 + ["A"] * 30 + ["B"] * 1 + ["C"] * 25 + ["D"] * 40 + ["E"] * 3
    obs = pd.DataFrame({"target_gene": labels, "cell_type": "x", "batch": "b"}, index=[f"c{i}" for i in range(len(labels))])
    res = make_split(obs, strategy="random_unseen", seed=3, fraction=0.6, min_cells_per_target=20)
    held = set(res.dropped_small) | set(res.val_targets)
    assert set(res.dropped_small) == held & {"B", "E"} and res.dropped_small  # this seed holds out a small one
    lab = np.array(labels)
    for t in res.dropped_small:
        assert set(res.assignment[lab == t]) == {"drop"}  # neither scored nor trained on
    assert all((lab[res.assignment == "val"] != t).all() for t in res.dropped_small)
    with pytest.raises(ConfigError, match="fewer than stage1.split.min_cells_per_target"):
        make_split(obs, strategy="random_unseen", seed=3, fraction=0.6, min_cells_per_target=20, small_targets="error")


def test_inspect_guesses_columns_and_prints_config(tmp_path):
    a = make_adata(n_cells=200, pert_col="sgRNA_target", control="NTC", targets=("G1", "G2", "G3", "G4"))
    a.obs = a.obs.rename(columns={"cell_type": "cell_line", "batch": "lane"})
    f = tmp_path / "screen.h5ad"
    a.write_h5ad(f)
    info = inspect_h5ad(f)
    assert info["guess"] == {"pert_col": "sgRNA_target", "control_values": ["NTC"], "cell_type_col": "cell_line",
                             "batch_col": "lane"}
    assert info["scale"] == "counts" and info["n_control_cells"] == 40 and info["n_perturbations"] == 4
    assert any("only 40 control cells" in w for w in info["warnings"])
    assert "pert_col: sgRNA_target" in info["config"] and "strategy: cell_line_holdout" in info["config"]
    proc = subprocess.run([sys.executable, "-m", "pertpipe", "inspect", str(f), "--json"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and json.loads(proc.stdout)["n_cells"] == 200
    proc = subprocess.run([sys.executable, "-m", "pertpipe", "inspect", str(tmp_path / "nope.h5ad")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_inspect_exits_non_zero_when_the_run_would_stop(tmp_path):
    """A file stage 1 would refuse (negative values; no perturbation column) makes `pertpipe inspect` say so as an
    error and exit 1 (the config block is still printed); a usable file with only advice exits 0."""
    good = make_adata(n_cells=200, pert_col="sgRNA_target", control="NTC", targets=("G1", "G2", "G3", "G4"))
    good.write_h5ad(tmp_path / "good.h5ad")
    bad = good.copy()
    x = bad.X.toarray()
    x[3, 2] = -1.0
    bad.X = sp.csr_matrix(x)
    bad.write_h5ad(tmp_path / "negative.h5ad")
    nolabel = good.copy()
    nolabel.obs = nolabel.obs.drop(columns="sgRNA_target")
    nolabel.write_h5ad(tmp_path / "nolabel.h5ad")
    codes = {}
    for name in ("good", "negative", "nolabel"):
        proc = subprocess.run([sys.executable, "-m", "pertpipe", "inspect", str(tmp_path / f"{name}.h5ad")],
                              capture_output=True, text=True, cwd=REPO)
        codes[name] = proc.returncode
        if name != "good":
            assert "ERROR (the run would stop here)" in proc.stdout and "would stop the run (exit 1)" in proc.stderr
            assert "Paste into my_data.yaml" in proc.stdout
    assert codes == {"good": 0, "negative": 1, "nolabel": 1}
