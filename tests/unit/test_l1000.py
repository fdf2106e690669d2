"""L1000 input: GCT 1.3 text, GCTX (HDF5) and cmapR's GCT object, read from the original shared files; level 3 ->
level 4 robust z-scores; the signature contract written by standardize."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertpipe import CONTROL_LABEL
from pertpipe.data.adapters import get_adapter
from pertpipe.data.l1000 import contract_obs, read_gct, read_gct_rdata, read_gctx, robust_zscore, standardize_l1000
from pertpipe.errors import ContractError


@pytest.fixture(scope="module")
def l1000(shared_data):
    return shared_data / "l1000"


def test_gct_13_values_and_metadata(l1000):
    g = read_gct(l1000 / "LJP005_A375_24H.gct")
    assert g.mat.shape == (377, 978) and g.row_meta.shape == (978, 11) and g.col_meta.shape == (377, 35)
    assert g.col_meta.index[0] == "LJP005_A375_24H_X1_B19:A03"
    assert g.row_meta["pr_gene_symbol"].iloc[0] == "PSME1"
    first = g.col_meta.iloc[0]
    assert first["cell_id"] == "A375" and first["pert_iname"] == "DMSO" and first["pert_type"] == "ctl_vehicle"
    # the first data line of the file, read by hand
    with open(l1000 / "LJP005_A375_24H.gct") as fh:
        lines = [next(fh) for _ in range(3 + 35 + 1)]
    row = lines[-1].rstrip("\n").split("\t")
    assert row[0] == g.row_meta.index[0]
    np.testing.assert_allclose(g.mat[:3, 0], np.array(row[12:15], dtype=np.float32))
    assert (g.col_meta["pert_type"] == "ctl_vehicle").sum() == 26
    obs = contract_obs(g.col_meta, path="gct")
    assert set(obs.loc[obs.target_gene == CONTROL_LABEL, "condition"]) == {"NA | 24 h"}  # CMap's -666 = missing


def test_gctx_matrix_orientation_and_inst_info(l1000):
    import h5py

    g = read_gctx(l1000 / "slinky/slinky_demo.gctx", inst_info=l1000 / "slinky/slinky_demo_inst_info.txt")
    assert g.mat.shape == (131, 12328)
    with h5py.File(l1000 / "slinky/slinky_demo.gctx") as f:
        raw = f["0/DATA/0/matrix"][:2, :5]
    np.testing.assert_array_equal(g.mat[:2, :5], raw)  # /0/DATA/0/matrix is samples x genes
    assert g.row_meta.index[:3].tolist() == ["5720", "466", "6009"]
    assert g.col_meta["pert_iname"].value_counts().to_dict() == {"DMSO": 59, "pgw": 40, "GFP": 15, "E2F3": 12,
                                                                "amoxicillin": 5}
    with pytest.raises(ContractError, match="samples have no row"):
        read_gctx(l1000 / "slinky/slinky_demo.gctx", inst_info=_truncated(l1000 / "slinky/slinky_demo_inst_info.txt"))


def _truncated(path):
    import tempfile

    out = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    out.write("".join(open(path).readlines()[:10]))
    out.close()
    return out.name


def test_cmapr_level5_rdata(l1000):
    g = read_gct_rdata(l1000 / "cmapR/ds.RData")
    assert g.mat.shape == (272, 978)
    conv = ad.read_h5ad(l1000 / "cmapR/cmapR_ds_level5.h5ad")  # the published conversion, for the check only
    np.testing.assert_allclose(g.mat, conv.X, atol=1e-5)
    assert g.col_meta["pert_iname"].value_counts().to_dict() == {"vemurafenib": 140, "atorvastatin": 94,
                                                                "venlafaxine": 38}
    obs = contract_obs(g.col_meta, path="ds", batch_col="brew_prefix")
    assert obs["cell_type"].nunique() == 65 and (obs["target_gene"] == CONTROL_LABEL).sum() == 0
    assert obs["dose"].iloc[0] == "10 uM" and obs["time"].iloc[0] == "6 h"


def test_robust_zscore_by_hand():
    x = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [100.0, 10.5]])
    z = robust_zscore(x, mad_floor=0.1)
    # gene 0: median 3, MAD 1 -> scale 1.4826; gene 1: MAD 0 -> floored at 0.1
    np.testing.assert_allclose(z[:, 0], np.clip((x[:, 0] - 3) / 1.4826, -10, 10), rtol=1e-6)
    np.testing.assert_allclose(z[:, 1], [0, 0, 0, 0, 5.0], rtol=1e-6)


def test_standardize_level3_plate_makes_level4(l1000, tmp_path):
    s = standardize_l1000(l1000 / "LJP005_A375_24H.gct", tmp_path / "a.h5ad", adapter=get_adapter("l1000", {"level": 3}))
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    assert s["n_cells"] == 377 and s["n_genes"] == 978 and s["n_control_cells"] == 26 and s["level_in"] == 3
    assert a.uns["pertpipe"]["standardize"]["scale"] == "zscore"
    x = a.X.toarray()
    g = read_gct(l1000 / "LJP005_A375_24H.gct")
    np.testing.assert_allclose(x[:, 5], robust_zscore(g.mat[:, [5]])[:, 0], rtol=1e-5)  # one plate: all wells
    assert np.abs(np.median(x, axis=0)).max() < 1e-5
    assert set(a.obs.columns) >= {"target_gene", "cell_type", "batch", "pert_type", "dose", "time", "condition"}


def test_standardize_gctx_maps_entrez_rows_to_landmarks(l1000, tmp_path):
    opts = {"source_format": "gctx", "level": 3, "inst_info": str(l1000 / "slinky/slinky_demo_inst_info.txt"),
            "landmarks": str(l1000 / "LJP005_A375_24H.gct")}
    s = standardize_l1000(l1000 / "slinky/slinky_demo.gctx", tmp_path / "s.h5ad", adapter=get_adapter("l1000", opts))
    a = ad.read_h5ad(tmp_path / "s.h5ad")
    assert s["n_genes"] == 978 and s["n_plates"] == 10 and a.n_obs == 131
    assert "PSME1" in a.var_names and a.obs.target_gene.value_counts()[CONTROL_LABEL] == 114  # DMSO + vectors
    without = {k: v for k, v in opts.items() if k != "landmarks"}
    with pytest.raises(ContractError, match="bare ids"):
        standardize_l1000(l1000 / "slinky/slinky_demo.gctx", tmp_path / "t.h5ad", adapter=get_adapter("l1000", without))
    assert not (tmp_path / "t.h5ad").exists()


def test_bad_gct_header(tmp_path):
    p = tmp_path / "bad.gct"
    p.write_text("#1.3\n2\t3\t0\t0\nid\ta\tb\n")
    with pytest.raises(ContractError, match="declares 2 rows x 3 samples"):
        read_gct(p)
    p.write_text("hello\n")
    with pytest.raises(ContractError, match="not a GCT version line"):
        read_gct(p)


def test_level5_keeps_values(l1000, tmp_path):
    s = standardize_l1000(l1000 / "cmapR/ds.RData", tmp_path / "l5.h5ad",
                          adapter=get_adapter("l1000", {"source_format": "gct_rdata", "batch_col": "brew_prefix"}))
    a = ad.read_h5ad(tmp_path / "l5.h5ad")
    conv = ad.read_h5ad(l1000 / "cmapR/cmapR_ds_level5.h5ad")
    assert s["level_in"] == 5 and s["n_contexts"] == 65
    row = pd.Index(conv.obs_names).get_loc(a.obs_names[0])
    sym = conv.var["pr_gene_symbol"].astype(str).tolist()
    np.testing.assert_allclose(a.X.toarray()[0], np.clip(conv.X[row, [sym.index(g) for g in a.var_names]], -10, 10),
                               atol=1e-5)


KD = Path(__file__).resolve().parents[1] / "data" / "cmapR" / "kd_gct.RData"


def test_one_line_plate_without_a_cell_column_needs_cell_type():
    """cmapR's kd_gct (one plate, no cell_id): refused with the fix naming adapter_options.cell_type, fields as plain
    strings; with cell_type every sample gets that context; a constant over a multi-line file is refused."""
    g = read_gct_rdata(KD)
    assert g.mat.shape == (374, 976) and "cell_id" not in g.col_meta.columns
    with pytest.raises(ContractError) as err:
        contract_obs(g.col_meta, path=KD)
    msg = str(err.value)
    assert "kd_gct.RData" in msg and "cell_type: <the cell line>" in msg and "np.str_" not in msg
    assert "'pert_well'" in msg
    obs = contract_obs(g.col_meta, path=KD, cell_type="LITMUS.KD017")
    assert set(obs.cell_type) == {"LITMUS.KD017"} and (obs.target_gene == CONTROL_LABEL).sum() == 40  # vector, untrt
    assert set(obs.batch) == {"plate0"}  # sample ids without '<plate>:' are one plate
    multi = g.col_meta.assign(cell_id=["A375", "MCF7"] * (len(g.col_meta) // 2))
    with pytest.raises(ContractError, match="holds 2 cell lines"):
        contract_obs(multi, path=KD, cell_type="A375")
