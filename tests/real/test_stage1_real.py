"""Stage 1 on real data from ../shared/data through the download mirror (folder and loopback http)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from conftest import FileServer, run_snakemake

from pertpipe.data.genes import load_alias_map, load_universe

pytestmark = [pytest.mark.real, pytest.mark.workflow]


def test_perturbench_devel_folder_mirror_vcc_universe(shared_data, tmp_path):
    cfg = {
        "dataset": "perturbench_devel",
        "mirror": str(shared_data / "perturbench"),
        "lock_file": None,
        "stage1": {
            "universe": {"kind": "file", "path": str(shared_data / "vcc" / "gene_names.csv"), "alias_rescue": False},
            "split": {"strategy": "random_unseen", "fraction": 0.3},
        },
    }
    run_snakemake(tmp_path, cfg, "stage1")
    s1 = tmp_path / "results/perturbench_devel/stage1"
    rep = json.loads((s1 / "stage1_report.json").read_text())
    assert rep["standardize"]["n_cells"] == 5961 and rep["standardize"]["scale_detected"] == "log1p"
    a = rep["alignment"]
    assert a["universe_size"] == 18080 and a["matched"] + a["dropped"] == 500
    assert a["filled_with_zeros"] == 18080 - a["matched"]
    assert rep["checks"]["gene_order_match"] == 1.0 and rep["checks"]["train_val_target_overlap"] == 0
    train = ad.read_h5ad(s1 / "train.h5ad", backed="r")
    assert train.shape[1] == 18080 and list(train.var_names) == load_universe(shared_data / "vcc/gene_names.csv")
    assert int(train.var["in_source"].sum()) == a["matched"]
    val = ad.read_h5ad(s1 / "val.h5ad")
    labels = set(val.obs["target_gene"]) | set(train.obs["target_gene"])
    assert "non-targeting" in labels and "control" not in labels
    held = set(rep["split"]["heldout_genes"])
    assert not any(held & set(t.split("+")) for t in train.obs["target_gene"].unique())
    # log1p values survive unchanged for a measured gene
    src = ad.read_h5ad(shared_data / "perturbench/devel.h5ad")
    g = next(x for x in src.var_names if x in set(train.var_names))
    cell = val.obs_names[0]
    np.testing.assert_allclose(val[cell, g].X.toarray().ravel(), src[cell, g].X.toarray().ravel(), rtol=1e-6)


def test_perturbench_norman_http_mirror_with_alias_rescue(shared_data, tmp_path):
    srv = FileServer()
    srv.root = shared_data
    try:
        cfg = {
            "dataset": "perturbench_norman",
            "mirror": srv.url(""),
            "lock_file": str(tmp_path / "lock.json"),
            "stage1": {"universe": {"kind": "vcc", "alias_rescue": True},
                       "split": {"strategy": "combo", "single_fraction": 0.25, "combo_fraction": 0.3}},
        }
        run_snakemake(tmp_path, cfg, "stage1")
    finally:
        srv.close()
    fetched = {p for p, _ in srv.requests}
    assert {"/perturbench/devel.h5ad", "/vcc/gene_names.csv", "/annotations/Homo_sapiens.gene_info.gz"} <= fetched
    rep = json.loads((tmp_path / "results/perturbench_norman/stage1/stage1_report.json").read_text())
    assert rep["standardize"]["n_cells"] == 3375 and rep["standardize"]["filter"] == {"dataset": ["norman19"]}
    cats = set(rep["split"]["categories"].values())
    assert "single_unseen" in cats and cats & {"seen0", "seen1", "seen2"}
    a = rep["alignment"]
    # every rescued pair is a real NCBI synonym of a VCC gene
    amap, _ = load_alias_map(shared_data / "annotations/Homo_sapiens.gene_info.gz",
                             load_universe(shared_data / "vcc/gene_names.csv"))
    assert all(amap[k] == v for k, v in a["rescued_pairs"].items())
    assert rep["checks"]["leakage"] == "none"
    # mirror copies were checked against the registry's mirror checksums (no lock entry needed)
    assert not (tmp_path / "lock.json").exists()
