"""Spatial branch library: LR resources, thresholds, kNN labels, priors, the mask, the k-fold hold-out (and that
the leak probe can see a leak), metrics, communication, readers of the original spacexr files, the registry."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.data.registry import Registry
from pertpipe.errors import ConfigError, ContractError
from pertpipe.io import load_torch
from pertpipe.spatial import evaluate as ev
from pertpipe.spatial.inputs import read_pair
from pertpipe.spatial.lrimpute import impute_inputs
from pertpipe.spatial.methods import run_methods
from pertpipe.spatial.model import SpatialParams, knn_labels, match_cells
from pertpipe.spatial.prepare import Priors, latent, prepare
from pertpipe.spatial.priors import ligand_target_prior, normalized_laplacian, ppi_adjacency, read_ppi, read_table
from pertpipe.spatial.resources import expressed_genes, read_lr_resource, select_lr_genes, split_complex

FAST = SpatialParams(k=5, latent_dim=4, hidden=16, encoder_epochs=5, decoder_epochs=20, batch_size=32, seed=0)


def _commot_csv(path, rows):
    pd.DataFrame(rows).to_csv(path)  # commot's layout: index + columns 0..3
    return path


def test_lr_resources_split_complexes_and_check_species(tmp_path):
    human = _commot_csv(tmp_path / "cc.csv", [["TGFB1", "TGFBR1_TGFBR2", "TGFb", "Secreted"],
                                              ["CXCL12", "CXCR4", "CXCL", "Secreted"],
                                              ["CXCL12", "CXCR4", "CXCL", "Secreted"]])  # a duplicate row
    pairs = read_lr_resource(human, "cellchatdb", "human")
    assert len(pairs) == 2
    assert pairs.receptor_genes[0] == ["TGFBR1", "TGFBR2"] and pairs.ligand_genes[1] == ["CXCL12"]
    assert split_complex("ITGA4_ITGB1") == ["ITGA4", "ITGB1"]
    with pytest.raises(ContractError, match="look human but the dataset's species is mouse"):
        read_lr_resource(human, "cellchatdb", "mouse")
    liana = tmp_path / "omni.csv"
    pd.DataFrame({"source": ["x"] * 3, "target": ["y"] * 3, "source_genesymbol": ["LGALS9", "Dll1", "APOE"],
                  "target_genesymbol": ["PTPRC", "Notch1", "LRP1_LRP2"],
                  "resource": ["consensus", "mouseconsensus", "consensus"]}).to_csv(liana)
    h = read_lr_resource(liana, "liana", "human")
    m = read_lr_resource(liana, "liana", "mouse")
    assert list(h.ligand) == ["LGALS9", "APOE"] and h.receptor_genes[1] == ["LRP1", "LRP2"]
    assert list(m.ligand) == ["Dll1"]


def test_real_lr_tables_parse(shared_data):
    cc = read_lr_resource(shared_data / "ligand_receptor/CellChatDB.ligrec.human.csv", "cellchatdb", "human")
    assert len(cc) == 1938 and (cc.receptor_genes.str.len() > 1).sum() == 922
    mouse = read_lr_resource(shared_data / "priors/commot_LRdatabase/CellPhoneDB_v4.0/CellPhoneDBv4.0.mouse.csv",
                             "cellphonedb", "mouse")
    assert mouse.ligand.iloc[0] == "Ptgr1"
    liana = read_lr_resource(shared_data / "ligand_receptor/liana_omni_resource.csv", "liana", "human")
    assert len(liana) == 4624


def test_expression_thresholds_by_cell_type():
    counts = np.array([[0, 5, 1], [0, 3, 0], [2, 0, 0], [0, 0, 0]], dtype=float)  # cells x genes
    logx = np.log1p(counts)
    types = np.array(["A", "A", "B", "B"])
    out = expressed_genes(logx, counts, ["g0", "g1", "g2"], types, min_mean=0.3, min_fraction=0.5)
    # g0: B mean log1p(2)/2 = 0.55, fraction 0.5 -> B; g1: A mean 1.59, fraction 1 -> A; g2: A mean 0.35, frac 0.5
    assert out == {"g1": ["A"], "g2": ["A"], "g0": ["B"]} or out == {"g0": ["B"], "g1": ["A"], "g2": ["A"]}
    strict = expressed_genes(logx, counts, ["g0", "g1", "g2"], types, min_mean=0.4, min_fraction=0.6)
    assert strict == {"g1": ["A"]}
    pairs = pd.DataFrame({"ligand": ["g1", "g0"], "receptor": ["g2", "gX"], "pathway": "", "resource": "t",
                          "ligand_genes": [["g1"], ["g0"]], "receptor_genes": [["g2"], ["gX"]]})
    sel = select_lr_genes(pairs, ["g0", "g1", "g2"], ["g1", "zz"], out)
    assert sel["lr_genes"] == ["g0", "g1", "g2"] and sel["measured_in_spatial"] == ["g1"]
    assert [p["ligand"] for p in sel["pairs"]] == ["g1"]  # gX is expressed nowhere: its pair is unusable


def test_knn_labels_and_mask_by_hand():
    z_sc = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    z_sp = np.array([[1, 0.05], [0.05, 1]], dtype=np.float32)
    idx, _ = match_cells(z_sp, z_sc, 2)
    assert sorted(idx[0]) == [0, 1] and sorted(idx[1]) == [1, 2]
    y = np.array([[1.0, 0.0], [3.0, 0.0], [5.0, 2.0], [7.0, 9.0]], dtype=np.float32)
    counts = (y > 0).astype(float)
    labels, mask = knn_labels(idx, y, counts)
    np.testing.assert_allclose(labels, [[2.0, 0.0], [4.0, 1.0]])
    np.testing.assert_array_equal(mask, [[True, False], [True, True]])  # gene 1: neither cell 0 nor 1 expresses it


def test_ppi_laplacian_and_ligand_target_prior_on_a_tiny_network():
    edges = pd.DataFrame({"a": ["A", "B", "A", "X"], "b": ["B", "A", "C", "A"], "weight": [0.9, 0.5, 0.2, 1.0]})
    w = ppi_adjacency(edges, ["A", "B", "C", "D", "E"], complexes=[["D", "E"]], min_weight=0.3)
    np.testing.assert_allclose(w.toarray(), [[0, 0.9, 0, 0, 0], [0.9, 0, 0, 0, 0], [0, 0, 0, 0, 0],
                                             [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]])
    lap = normalized_laplacian(w)
    np.testing.assert_allclose(lap[:2, :2], [[1, -1], [-1, 1]])  # I - D^-1/2 W D^-1/2 with d = 0.9 each
    assert np.all(lap[2] == 0)  # an isolated gene has no smoothness term
    lr = pd.DataFrame({"from": ["L1"], "to": ["R1"]})
    sig = pd.DataFrame({"from": ["R1", "K1"], "to": ["K1", "TF1"]})
    dor = pd.DataFrame({"tf": ["TF1", "TF1", "TF2"], "confidence": ["A", "E", "A"], "target": ["T1", "T2", "T3"]})
    prior, info = ligand_target_prior(["L1", "L2", "L3"], ["T1", "T2", "T3"], lr_network=lr, sig_network=sig,
                                      dorothea=dor, extra_receptors={"L3": ["TF2"]})
    np.testing.assert_allclose(prior, [[1, 0, 0], [0, 0, 0], [0, 0, 1]])  # T2 only at confidence E (> C)
    assert info["n_ligands_with_receptors"] == 2
    loose, _ = ligand_target_prior(["L1"], ["T1", "T2"], lr_network=lr, sig_network=sig, dorothea=dor,
                                   max_confidence="E")
    np.testing.assert_allclose(loose, [[1, 0.2]])  # confidence weights A 1.0, E 0.2; the same TF


def test_real_priors_read(shared_data):
    string = read_ppi(shared_data / "priors/string_v12_human_entrez_ntm700_top3_400.tsv.gz", "string")
    assert len(string) == 174962 and string.weight.between(0, 1).all()
    iref = read_ppi(shared_data / "priors/omicsintegrator_iref_mitab_miscore_2013_08_12_interactome.txt.gz", "iref")
    assert len(iref) == 175853
    assert read_table(shared_data / "priors/nichenetr_v1_lr_network_full.tsv").shape == (12659, 4)


def test_network_tables_from_r_data_files(tmp_path):
    import rdata

    df = pd.DataFrame({"from": ["CXCL12"], "to": ["CXCR4"], "source": ["kegg"], "database": ["kegg"]})
    rdata.write_rda(tmp_path / "lr_network.rda", {"lr_network": df})
    got = read_table(tmp_path / "lr_network.rda")
    assert list(got.columns) == ["from", "to", "source", "database"] and got["to"].iloc[0] == "CXCR4"


def toy_pair(n_spots=60, seed=0):
    """3 cell types with their own genes; spots mix them along x."""
    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(24)] + ["LIG", "REC", "HELD"]
    prof = rng.gamma(0.5, 1, (3, len(genes)))
    for t in range(3):
        prof[t, t * 8:(t + 1) * 8] += 4
    prof[0, 24] += 5  # LIG in type 0, REC and HELD in type 1 (HELD follows REC)
    prof[1, 25] += 5
    prof[1, 26] += 5
    prof[2, 24:27] = 0
    types = np.repeat(["T0", "T1", "T2"], 25)
    sc = rng.poisson(prof[np.repeat([0, 1, 2], 25)] * 3)
    x = np.linspace(0, 1, n_spots)
    frac = np.stack([1 - x, x, 0.3 * np.ones_like(x)], 1)
    frac /= frac.sum(1, keepdims=True)
    spc = rng.poisson(frac @ prof * 10)
    spatial = ad.AnnData(X=sp.csr_matrix(spc.astype(np.float32)), var=pd.DataFrame(index=genes),
                         obs=pd.DataFrame(index=[f"s{i}" for i in range(n_spots)]))
    spatial.obsm["spatial"] = np.stack([x * 10, rng.uniform(0, 1, n_spots)], 1)
    scrna = ad.AnnData(X=sp.csr_matrix(sc.astype(np.float32)), var=pd.DataFrame(index=genes),
                       obs=pd.DataFrame({"cell_type": pd.Categorical(types)}, index=[f"c{i}" for i in range(75)]))
    return spatial, scrna


def toy_priors(lr_genes):
    lap = np.zeros((len(lr_genes), len(lr_genes)), np.float32)
    i, j = lr_genes.index("REC"), lr_genes.index("HELD")
    lap[[i, j], [i, j]] = 1
    lap[i, j] = lap[j, i] = -1
    return Priors(lr_genes, lap, ["LIG"], ["G0", "G1"], np.array([[1.0, 0.5]], np.float32))


def test_mask_keeps_genes_out_of_spots_whose_cells_never_express_them():
    spatial, scrna = toy_pair()
    prep = prepare(spatial, scrna)
    lr = ["LIG", "REC", "HELD"]
    lat = latent(prep, FAST)
    inp = impute_inputs(prep, lat, lr, toy_priors(lr), FAST)
    assert (~inp.mask).any()  # some spots matched only cells without LIG/REC/HELD counts
    out, _ = run_methods(spatial, scrna, lr, lr, toy_priors(lr), FAST.with_(offset="off"),
                         ["lrimpute", "lrimpute_no_mask"])
    assert np.all(out["lrimpute"][~inp.mask] == 0)
    assert np.any(out["lrimpute_no_mask"][~inp.mask] != 0)
    from pertpipe.spatial.lrimpute import Validation, smooth_and_mask

    pred = np.abs(np.random.default_rng(0).normal(size=inp.mask.shape)).astype(np.float32) + 0.1
    shifted = smooth_and_mask(pred, None, FAST, Validation(5, offset=1.0), inp.mask)
    plain = smooth_and_mask(pred, None, FAST, Validation(5), inp.mask)
    floor = np.broadcast_to(plain.mean(0), plain.shape)  # the offset shifts the masked spots with the rest
    np.testing.assert_allclose(shifted, plain + floor, rtol=1e-6)
    assert np.all(shifted[~inp.mask] == np.broadcast_to(shifted.min(0), shifted.shape)[~inp.mask])


def test_kfold_never_trains_on_held_out_genes_and_the_probe_sees_a_leak():
    spatial, scrna = toy_pair()
    lr = ["LIG", "REC", "HELD"]
    altered = spatial.copy()
    col = list(spatial.var_names).index("HELD")
    x = altered.X.toarray()
    x[:, col] = np.random.default_rng(5).permutation(x[:, col]) * 3  # a different spatial pattern of HELD
    altered.X = sp.csr_matrix(x)
    methods = ["lrimpute", "lrimpute_no_ppi", "knn_mean", "hvg_ae"]
    auto = FAST.with_(k="auto", k_candidates=(3, 10))  # k chosen on validation genes: visible genes only
    a, info = run_methods(spatial, scrna, lr, ["HELD"], toy_priors(lr), auto, methods, heldout=["HELD"])
    b, _ = run_methods(altered, scrna, lr, ["HELD"], toy_priors(lr), auto, methods, heldout=["HELD"])
    assert info["latent"]["k"] == info["validation"]["k"] in (3, 10)
    assert set(info["validation"]["scores"]["k"]) == {"3", "10"}
    for m in methods:  # nothing of HELD's spatial values reaches any method
        np.testing.assert_array_equal(a[m], b[m])
    # the probe works: without the hold-out, lrimpute reads HELD's measured values and the prediction moves
    c, _ = run_methods(spatial, scrna, lr, ["HELD"], toy_priors(lr), FAST, ["lrimpute"])
    d, _ = run_methods(altered, scrna, lr, ["HELD"], toy_priors(lr), FAST, ["lrimpute"])
    assert np.abs(c["lrimpute"] - d["lrimpute"]).max() > 1e-3
    res = ev.kfold_evaluate(spatial, scrna, lr, toy_priors(lr), FAST, ["lrimpute", "knn_mean"], k=3)
    assert sorted(g for f in res["folds"] for g in f) == sorted(res["genes"]) and len(res["folds"]) == 3
    assert set(res["per_gene"].method) == {"lrimpute", "knn_mean"} and len(res["per_gene"]) == 2 * len(res["genes"])
    assert res["summary"].loc["lrimpute", "pcc"] > 0.3  # the toy's genes follow the cell mixture
    assert ev.method_groups(["lrimpute", "tangram", "knn_mean", "gimvi"]) == [["lrimpute", "knn_mean"], ["tangram"],
                                                                              ["gimvi"]]
    both = ev.kfold_evaluate(spatial, scrna, lr, toy_priors(lr), FAST, ["lrimpute", "knn_mean", "tangram"], k=3,
                             tangram_epochs=20)
    one, two = (ev.kfold_evaluate(spatial, scrna, lr, toy_priors(lr), FAST, ["lrimpute", "knn_mean", "tangram"], k=3,
                                  tangram_epochs=20, workers=w) for w in (1, 2))
    for m in ("lrimpute", "knn_mean"):  # split into tasks: the same numbers as all methods in one call
        np.testing.assert_array_equal(both["predictions"][m], res["predictions"][m])
    for m in ("lrimpute", "knn_mean", "tangram"):  # one or two spawned workers: the same numbers (Tangram's torch
        if m != "tangram":                          # rounds differently from process to process, ~1e-6)
            np.testing.assert_array_equal(one["predictions"][m], two["predictions"][m])
        np.testing.assert_allclose(one["predictions"][m], two["predictions"][m], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(one["predictions"][m], both["predictions"][m], rtol=1e-4, atol=1e-4)
    assert one["validation"] == two["validation"] == res["validation"] and len(two["validation"]) == 3


def test_metrics_and_accuracy_score_by_hand():
    v = np.array([0.0, 1.0, 2.0, 3.0])
    m = ev.gene_metrics(v, v)
    assert m["pcc"] == pytest.approx(1) and m["ssim"] == pytest.approx(1) and m["rmse"] == 0 and m["js"] == 0
    r = ev.gene_metrics(np.array([3.0, 2.0, 1.0, 0.0]), v)
    assert r["pcc"] == pytest.approx(-1) and r["rmse"] == pytest.approx(np.sqrt(np.mean((2 * (v - 1.5) / v.std()) ** 2)))
    p, q = np.array([0.5, 1 / 3, 1 / 6, 0]), np.array([0, 1 / 6, 1 / 3, 0.5])
    mid = (p + q) / 2
    js = 0.5 * sum(a * np.log(a / c) for a, c in zip(p, mid) if a > 0) + \
        0.5 * sum(b * np.log(b / c) for b, c in zip(q, mid) if b > 0)
    assert r["js"] == pytest.approx(js)
    summary = pd.DataFrame({"pcc": [0.5, 0.2, 0.1], "ssim": [0.4, 0.3, 0.1], "rmse": [1.0, 1.1, 1.2],
                            "js": [0.3, 0.1, 0.2]}, index=["a", "b", "c"])
    np.testing.assert_allclose(ev.accuracy_scores(summary), [(1 + 1 + 1 + 0) / 4, (0.5 + 0.5 + 0.5 + 1) / 4,
                                                             (0 + 0 + 0 + 0.5) / 4])


def test_communication_scores_neighbouring_spots_by_hand():
    coords = np.array([[0.0, 0], [1, 0], [2, 0]])
    edges = ev.spatial_neighbors(coords, k=1)
    assert edges.tolist() == [[0, 1], [1, 0], [2, 1]]
    pairs = [{"ligand": "L", "receptor": "R1_R2", "ligand_genes": ["L"], "receptor_genes": ["R1", "R2"]}]
    expr = {"L": np.array([2.0, 0, 0]), "R1": np.array([0, 1.0, 0]), "R2": np.array([0, 0.5, 1.0])}
    # scaled to max 1: L = [1,0,0], R1 = [0,1,0], R2 = [0,0.5,1] -> complex min = [0, 0.5, 0]; edge 0->1 scores 0.5
    assert ev.communication(pairs, edges, expr)[0] == pytest.approx(0.5 / 3)
    assert ev.communication(pairs, edges, {"L": expr["L"], "R1": expr["R1"]})[0] == 0  # a subunit missing
    rec = ev.communication_recovery(pairs * 2, coords, {"L": expr["L"]}, expr, expr, k=1, top=1)
    assert rec["before"]["n_pairs_scored"] == 0 and rec["after"]["n_pairs_scored"] == 2


def test_spacexr_originals_equal_the_published_conversions(shared_data):
    d = shared_data / "spatial"
    s, c = read_pair("spacexr_csv", {"counts": d / "hippocampus_visium/spatialrna_counts.csv",
                                     "coords": d / "hippocampus_visium/spatialrna_coords.csv",
                                     "ref_counts": d / "hippocampus_visium/reference_counts.csv",
                                     "ref_cell_types": d / "hippocampus_visium/reference_cell_types.csv"})
    conv = ad.read_h5ad(d / "hippocampus_visium/spacexr_visium_spatial.h5ad")
    assert s.shape == (313, 276) and c.shape == (510, 307) and c.obs.cell_type.nunique() == 17
    x = conv[s.obs_names, s.var_names].X
    np.testing.assert_array_equal(s.X.toarray(), x.toarray() if sp.issparse(x) else x)
    np.testing.assert_allclose(s.obsm["spatial"], conv[s.obs_names].obsm["spatial"])
    s, c = read_pair("spacexr_rds", {"counts": d / "lymph_visium/expr.rds", "coords": d / "lymph_visium/coords.rds",
                                     "reference": d / "lymph_visium/ref_downsampled.rds"})
    ref = ad.read_h5ad(d / "lymph_visium/spacexr_lymph_ref_scrna.h5ad")
    assert s.shape == (1000, 2000) and c.shape == (330, 10237)
    assert (c.obs.cell_type.value_counts() == 30).all()
    x = ref[c.obs_names, c.var_names].X
    np.testing.assert_array_equal(c.X.toarray(), x.toarray() if sp.issparse(x) else x)
    assert list(ref[c.obs_names].obs.cell_type.astype(str)) == list(c.obs.cell_type.astype(str))


def test_bad_spatial_input_names_the_file_and_the_fix(tmp_path):
    spatial, scrna = toy_pair()
    del spatial.obsm["spatial"]
    spatial.write_h5ad(tmp_path / "sp.h5ad")
    scrna.write_h5ad(tmp_path / "sc.h5ad")
    with pytest.raises(ContractError, match=r"sp.h5ad: field 'obsm\['spatial'\]'.*Fix: store spot coordinates"):
        read_pair("h5ad_pair", {"spatial": str(tmp_path / "sp.h5ad"), "scrna": str(tmp_path / "sc.h5ad")})
    spatial, _ = toy_pair()
    spatial.X = spatial.X * 0.5  # not counts
    spatial.write_h5ad(tmp_path / "sp2.h5ad")
    with pytest.raises(ContractError, match="not raw counts"):
        read_pair("h5ad_pair", {"spatial": str(tmp_path / "sp2.h5ad"), "scrna": str(tmp_path / "sc.h5ad")})


def test_registry_spatial_entries(tmp_path):
    from conftest import REPO as repo_root

    reg = Registry.load(repo_root / "resources/datasets.yaml")
    assert reg.names("spatial") == ["hippocampus_visium", "hypothalamus_merfish", "lymph_node_visium"]
    e = reg.get("lymph_node_visium", "spatial")
    assert e.species == "human" and set(e.inputs) == {"counts", "coords", "reference"}
    assert all(reg.get(r).kind == "resource" for r in e.inputs.values())
    bad = tmp_path / "r.yaml"
    bad.write_text("spatial_datasets:\n  x: {adapter: h5ad_pair, species: fish, inputs: {spatial: a}}\n")
    with pytest.raises(ConfigError, match="species is 'fish'. Fix: use one of"):
        Registry.load(bad)
    with pytest.raises(ConfigError, match="inputs.spatial: .*nope.h5ad does not exist"):
        reg.with_user_spatial({"mine": {"species": "human", "inputs": {"spatial": "nope.h5ad", "scrna": "x"}}},
                              base_dir=tmp_path)


def test_tangram_and_gimvi_baselines_run_on_a_toy_pair():
    spatial, scrna = toy_pair()
    lr = ["LIG", "REC", "HELD"]
    out, info = run_methods(spatial, scrna, lr, ["HELD", "LIG"], None, FAST, ["tangram", "gimvi"], heldout=["HELD"],
                            tangram_epochs=50, gimvi_epochs=5)
    assert info["unavailable"] == {}
    for m in ("tangram", "gimvi"):
        assert out[m].shape == (spatial.n_obs, 2) and np.isfinite(out[m]).all() and (out[m] >= 0).all()
    truth = spatial[:, "HELD"].X.toarray().ravel()
    assert np.corrcoef(out["tangram"][:, 0], truth)[0, 1] > 0.3  # HELD follows type 1, which grows along x


def test_matrices_stay_sparse_and_the_latent_reads_the_most_variable_shared_genes():
    from pertpipe.spatial.model import col_variance, log_normalize

    spatial, scrna = toy_pair()
    prep = prepare(spatial, scrna, max_input_genes=10)
    assert sp.issparse(prep.sp_log) and sp.issparse(prep.sc_log)
    assert len(prep.input_genes) == 10 and prep.x_sp.shape == (spatial.n_obs, 10)
    var = col_variance(log_normalize(scrna.X))
    top = {scrna.var_names[j] for j in np.argsort(-var)[:10]}
    assert set(prep.input_genes) == top
    dense = np.log1p(scrna.X.toarray() / scrna.X.toarray().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(var, dense.var(0), rtol=1e-4, atol=1e-5)


def test_nichenet_ligand_target_matrix_rds(tmp_path):
    """NicheNet's published matrix (targets x ligands R matrix with dimnames) restricted to our genes, rows max 1."""
    import rdata
    import xarray as xr
    from rdata.conversion import to_r
    from rdata.parser import RObjectType

    from pertpipe.spatial.priors import read_ligand_target_matrix

    def matrix_to_r(data, converter):  # an R numeric matrix with dimnames, as saveRDS writes it
        attrs = converter.convert_to_r_attributes({
            "dim": np.array(data.shape, dtype=np.int32),
            "dimnames": [np.array([str(v) for v in data.coords[d].values]) for d in data.dims]})
        return to_r.build_r_object(RObjectType.REAL, value=np.ravel(np.asarray(data.values, float), order="F"),
                                   attributes=attrs)

    m = xr.DataArray(np.array([[0.1, 0.0], [0.5, 0.2], [0.0, 0.9]]), dims=["t", "l"],
                     coords={"t": ["T1", "T2", "T3"], "l": ["CXCL12", "TGFB1"]})
    rdata.write_rds(tmp_path / "ligand_target_matrix.rds", m,
                    constructor_dict={**to_r.DEFAULT_CLASS_MAP, xr.DataArray: matrix_to_r})
    got = read_ligand_target_matrix(tmp_path / "ligand_target_matrix.rds", ["Tgfb1", "Cxcl12", "Il6"],
                                    ["T3", "T2", "T9"])
    np.testing.assert_allclose(got, [[1.0, 0.2 / 0.9, 0], [0, 1.0, 0], [0, 0, 0]])  # mouse spelling, unknown genes 0


@pytest.mark.parametrize("values,msg", [
    ({"latent_dim": "big"}, "spatial.model.latent_dim is 'big'. Fix: use an integer"),
    ({"match": "euclid"}, "spatial.model.match is 'euclid'. Fix: use one of ['cosine', 'csls']"),
    ({"colour": 1}, "config spatial.model: unknown hyperparameter(s) ['colour']"),
])
def test_spatial_settings_use_the_models_checker(values, msg):
    from pertpipe.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        SpatialParams.from_config(values)
    assert msg in str(err.value)
    assert SpatialParams.from_config({"k_candidates": [5, 10], "k": "auto"}).k_candidates == (5, 10)


# -- the spatial fits run on the shared training loop: killed mid-run, they resume to the same weights -------------
_FIT = r'''
import sys
import numpy as np, torch
torch.set_num_threads(1)
from pertpipe.spatial.model import ImputeInputs, SpatialParams, fit_latent, fit_lrimpute


def fit(which, checkpoint):
    rng = np.random.default_rng(0)
    if which == "latent":
        p = SpatialParams(encoder_epochs=40, batch_size=32, latent_dim=8, hidden=32, align_start=0.1, seed=1)
        x_sp, x_sc = (rng.normal(size=(n, 60)).astype(np.float32) for n in (600, 500))
        return np.concatenate(fit_latent(x_sp, x_sc, p, checkpoint=checkpoint)[:2])
    p = SpatialParams(decoder_epochs=60, batch_size=16, hidden=32, seed=1)
    n, g = 2000, 30
    inp = ImputeInputs(rng.normal(size=(n, 8)).astype(np.float32), rng.random((n, g)).astype(np.float32),
                       rng.random((n, g)) > 0.2, [f"g{i}" for i in range(g)], obs=rng.random((n, 3)).astype(np.float32),
                       obs_genes=["g0", "g1", "g2"], laplacian=np.eye(g, dtype=np.float32))
    model, _ = fit_lrimpute(inp, p, checkpoint=checkpoint)
    return torch.cat([t.flatten() for t in model.state_dict().values()]).numpy()


if __name__ == "__main__":
    fit(sys.argv[1], sys.argv[2])
'''


@pytest.mark.parametrize("which", ["latent", "lrimpute"])
def test_spatial_training_resumes_after_sigkill(tmp_path, which):
    import os
    import subprocess
    import sys

    from conftest import REPO, kill_at_checkpoint

    (tmp_path / "fit_spatial.py").write_text(_FIT)
    ckpt = tmp_path / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "fit_spatial.py"), which, str(ckpt)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed_at = kill_at_checkpoint(proc, ckpt, min_epoch=2, timeout=120)
    assert killed_at is not None and killed_at < (40 if which == "latent" else 60), "not killed mid-training"
    sys.path.insert(0, str(tmp_path))
    try:
        import fit_spatial

        resumed = fit_spatial.fit(which, str(ckpt))  # picks up at the killed run's last checkpoint
        straight = fit_spatial.fit(which, None)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fit_spatial", None)
    np.testing.assert_array_equal(resumed, straight)
    assert load_torch(ckpt)["epoch"] == (40 if which == "latent" else 60)


def coexpression_pair(seed=0, n_sc=300, n_sp=200, n_genes=30):
    """Two cell types; within each, a hidden factor drives the shared genes S0..S19 and the gene TGT (the
    co-expression a kNN mean, an average over matched cells, cannot carry); spots are single cells of the same kind,
    on a grid whose neighbours share the factor."""
    rng = np.random.default_rng(seed)

    def cells(n, f, depth):
        t = rng.integers(0, 2, n)
        base = depth * np.where(t[:, None] == 0, 3.0, 8.0) * np.ones((n, n_genes))
        lam = base.copy()
        lam[:, :20] *= np.exp(np.outer(f, load))  # most shared genes follow the factor, each by its loading
        tgt = depth * np.where(t == 0, 4.0, 9.0) * np.exp(0.8 * f)
        x = rng.poisson(np.column_stack([lam, tgt]))
        return x, np.array(["A", "B"])[t]

    load = rng.uniform(0.3, 1.0, 20)
    genes = [f"S{j}" for j in range(20)] + [f"G{j}" for j in range(20, n_genes)] + ["TGT"]
    x_sc, ct = cells(n_sc, rng.normal(size=n_sc), 2.0)
    side = int(np.ceil(np.sqrt(n_sp)))
    xy = np.array([(i % side, i // side) for i in range(n_sp)], float)
    f_sp = np.sin(xy[:, 0] / 3) + np.cos(xy[:, 1] / 4)  # smooth in space
    x_sp, _ = cells(n_sp, f_sp, 20.0)  # deep spots: their own measurements carry the factor
    scrna = ad.AnnData(X=sp.csr_matrix(x_sc.astype(np.float32)), obs=pd.DataFrame({"cell_type": ct}),
                       var=pd.DataFrame(index=genes))
    spatial = ad.AnnData(X=sp.csr_matrix(x_sp.astype(np.float32)), var=pd.DataFrame(index=genes))
    spatial.obsm["spatial"] = xy
    return spatial, scrna


def test_residual_transfer_and_smoothing_are_chosen_on_visible_genes_and_help_a_held_out_gene():
    """What a spot measures on the visible genes, carried through the scRNA's within-type co-expression, predicts
    the held-out TGT better than the kNN mean; validation (visible genes only) turns it on, and smoothing too."""
    from pertpipe.evaluation.spatial import pcc
    from pertpipe.spatial.refine import residual_transfer, smooth_spots, spot_neighbours
    from pertpipe.spatial.validation import validate

    spatial, scrna = coexpression_pair()
    prep = prepare(spatial, scrna, ["TGT"])
    params = FAST.with_(encoder_epochs=20, val_fraction=0.3, neighbours="latent")  # the residual on its own
    val = validate(prep, params, spatial=spatial, scrna=scrna, lr_genes=["TGT", "S0", "S1"])
    assert "TGT" not in val.genes and val.strength > 0 and val.smooth > 0
    auto = validate(prep, params.with_(neighbours="auto"), spatial=spatial, scrna=scrna, lr_genes=["TGT"])
    assert set(auto.scores["neighbours"]) == {"latent", "pv", "both"} and auto.neighbours in ("latent", "pv", "both")
    lat = latent(prep, params, k=val.k, neighbours=val.neighbours)
    truth = np.log1p(spatial[:, "TGT"].X.toarray().ravel() / spatial.X.sum(1).A.ravel() * 1e4)
    base = knn_labels(lat.idx, np.log1p(scrna[:, ["TGT"]].X.toarray()), scrna[:, ["TGT"]].X.toarray())[0][:, 0]
    corr = residual_transfer(prep, lat.idx, prep.input_genes, ["TGT"], val.alpha)[:, 0]
    assert pcc(base + val.strength * corr, truth) > pcc(base, truth) + 0.01  # measured +0.016
    nb = spot_neighbours(prep.coords, 4)
    x = np.arange(len(nb), dtype=np.float32)[:, None]
    np.testing.assert_allclose(smooth_spots(x, nb, 0.5)[:, 0], 0.5 * x[:, 0] + 0.5 * x[nb, 0].mean(1), rtol=1e-6)
    assert smooth_spots(x, nb, 0.0) is x


def test_expression_regression_is_the_ridge_by_hand_and_validation_turns_it_on_where_it_helps():
    """The regression equals the closed-form ridge from the standardised shared genes to the output gene on the
    scRNA cells (dual and gene-space forms agree); its blend is rescaled to the labels' spread; on the co-expression
    pair validation (visible genes only) picks it and it predicts the held-out TGT better than the kNN mean."""
    from pertpipe.evaluation.spatial import pcc
    from pertpipe.spatial.refine import blend_regression, expression_regression
    from pertpipe.spatial.validation import validate

    spatial, scrna = coexpression_pair()
    prep = prepare(spatial, scrna, ["TGT"])
    xs, xp = prep.x_sc.astype(np.float64), prep.x_sp.astype(np.float64)
    y = np.log1p(scrna[:, ["TGT"]].X.toarray() / scrna.X.sum(1).A * 1e4)
    gram = xs.T @ xs
    lam = 10.0 * np.trace(xs @ xs.T) / len(xs)
    w = np.linalg.solve(gram + lam * np.eye(len(gram)), xs.T @ (y - y.mean(0)))
    by_hand = np.clip(xp @ w + y.mean(0), 0, None)
    np.testing.assert_allclose(expression_regression(prep, ["TGT"], 10.0), by_hand, rtol=1e-4, atol=1e-5)
    few = prepare(spatial, scrna[:12], ["TGT"])  # fewer cells than genes: the dual form
    xs, xp = few.x_sc.astype(np.float64), few.x_sp.astype(np.float64)
    y = np.log1p(scrna[:12, ["TGT"]].X.toarray() / scrna[:12].X.sum(1).A * 1e4)
    lam = 10.0 * np.trace(xs @ xs.T) / len(xs)
    w = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (y - y.mean(0)))
    np.testing.assert_allclose(expression_regression(few, ["TGT"], 10.0), np.clip(xp @ w + y.mean(0), 0, None),
                               rtol=1e-4, atol=1e-5)
    labels = (5 + np.random.default_rng(0).normal(0, 0.3, (len(by_hand), 1))).astype(np.float32)  # no clipping
    full = blend_regression(labels, by_hand, 1.0)
    np.testing.assert_allclose([full.mean(), full.std()], [labels.mean(), labels.std()], rtol=1e-3)
    assert pcc(full[:, 0], by_hand[:, 0]) > 0.999 and blend_regression(labels, by_hand, 0.0) is labels

    params = FAST.with_(encoder_epochs=20, val_fraction=0.5, neighbours="latent", residual="off", smooth="off")
    val = validate(prep, params, spatial=spatial, scrna=scrna, lr_genes=["TGT"])
    assert "TGT" not in val.genes and val.regression > 0 and "regression" in val.scores
    lat = latent(prep, params, k=val.k, neighbours=val.neighbours)
    truth = np.log1p(spatial[:, "TGT"].X.toarray().ravel() / spatial.X.sum(1).A.ravel() * 1e4)
    base = knn_labels(lat.idx, np.log1p(scrna[:, ["TGT"]].X.toarray()), scrna[:, ["TGT"]].X.toarray())[0]
    blended = blend_regression(base, expression_regression(prep, ["TGT"], val.regression_alpha), val.regression)
    assert pcc(blended[:, 0], truth) > pcc(base[:, 0], truth) + 0.05


def test_without_priors_an_unmeasured_gene_keeps_its_pseudo_label():
    """The decoder's change starts at zero and only the measured genes' term moves it: with the priors off, a
    held-out gene's imputation is its pseudo-label after the mask, smoothing and offset (as docs/spatial.md says),
    while a measured LR gene moves."""
    from pertpipe.spatial.lrimpute import Validation, impute_inputs, lrimpute_predict, smooth_and_mask

    spatial, scrna = toy_pair()
    lr = ["LIG", "REC", "HELD"]
    prep = prepare(spatial, scrna, ["HELD"])
    lat = latent(prep, FAST)
    val = Validation(5, smooth=0.5, offset=1.0)
    pred, _ = lrimpute_predict(prep, lat, lr, lr, None, FAST, val)
    inp = impute_inputs(prep, lat, lr, None, FAST, val)
    labels = smooth_and_mask(np.clip(inp.labels, 0, None), prep.coords, FAST, val, inp.mask)
    np.testing.assert_allclose(pred[:, 2], labels[:, 2], rtol=1e-6)  # HELD: not measured here
    assert np.abs(pred[:, :2] - labels[:, :2]).max() > 1e-3  # LIG, REC: measured, refined by the decoder


def test_validation_switches_off_what_does_not_help():
    """Random spots (no co-expression to carry, no spatial structure): the residual and the smoothing stay off; the
    ablation names exist; priors 'on' keeps both terms without judging them."""
    from pertpipe.spatial.methods import LRIMPUTE_VARIANTS
    from pertpipe.spatial.validation import validate

    spatial, scrna = coexpression_pair(seed=3)
    rng = np.random.default_rng(1)
    shuffled = spatial.copy()
    shuffled.obsm["spatial"] = rng.permutation(spatial.obsm["spatial"])
    x = spatial.X.toarray()
    shuffled.X = sp.csr_matrix(np.column_stack([rng.permutation(col) for col in x.T]))  # genes independent
    prep = prepare(shuffled, scrna, ["TGT"])
    val = validate(prep, FAST.with_(encoder_epochs=10, val_fraction=0.3), spatial=shuffled, scrna=scrna, lr_genes=["TGT"])
    assert val.strength == 0 and val.smooth == 0 and val.regression == 0 and val.neighbours == "latent"
    assert {"lrimpute_no_residual", "lrimpute_no_smooth", "lrimpute_no_regression"} <= set(LRIMPUTE_VARIANTS)
    lr = ["LIG", "REC", "HELD"]
    sp_toy, sc_toy = toy_pair()
    _, info = run_methods(sp_toy, sc_toy, lr, ["HELD"], toy_priors(lr), FAST.with_(priors="on"), ["lrimpute"],
                          heldout=["HELD"])
    assert info["validation"]["ppi"] and info["validation"]["ligand_target"]
    _, info = run_methods(sp_toy, sc_toy, lr, ["HELD"], toy_priors(lr), FAST.with_(priors="validated"), ["lrimpute"],
                          heldout=["HELD"])
    assert "priors" in info["validation"]["scores"]  # judged on validation genes and recorded
    assert "off" not in info["validation"]["scores"]["priors"].get("note", "")
    off, info = run_methods(sp_toy, sc_toy, lr, ["HELD"], toy_priors(lr), FAST, ["lrimpute"], heldout=["HELD"])
    assert FAST.priors == "off" and not info["validation"]["ppi"] and not info["validation"]["ligand_target"]
    none, _ = run_methods(sp_toy, sc_toy, lr, ["HELD"], None, FAST, ["lrimpute"], heldout=["HELD"])
    np.testing.assert_allclose(off["lrimpute"], none["lrimpute"], atol=1e-5)  # off = no prior term at all


def test_spage_recovers_a_gene_from_its_nearest_cells():
    from pertpipe.evaluation.spatial import pcc
    from pertpipe.spatial.baselines import spage

    spatial, scrna = coexpression_pair(seed=2)
    sc_log = np.log1p(scrna.X.toarray())
    sp_log = np.log1p(spatial.X.toarray())
    pred = spage(sp_log[:, :30], sc_log[:, :30], sc_log[:, 30:], n_pv=10, k=20)
    assert pred.shape == (spatial.n_obs, 1) and (pred >= 0).all()
    assert pcc(pred[:, 0], sp_log[:, 30]) > 0.5  # the cell type and the factor carry over


def test_rank_transformed_values_are_refused(tmp_path):
    from scipy.stats import rankdata

    from pertpipe.spatial.inputs import rank_like

    spatial, scrna = coexpression_pair()
    assert rank_like(spatial.X) is None and rank_like(scrna.X) is None
    ranks = np.vstack([rankdata(r, method="ordinal") for r in spatial.X.toarray()])
    assert "permutation" in rank_like(ranks)
    bad = spatial.copy()
    bad.X = sp.csr_matrix(ranks.astype(np.float32))
    bad.write_h5ad(tmp_path / "slide.h5ad")
    scrna.write_h5ad(tmp_path / "ref.h5ad")
    with pytest.raises(ContractError) as err:
        read_pair("h5ad_pair", {"spatial": str(tmp_path / "slide.h5ad"), "scrna": str(tmp_path / "ref.h5ad")})
    msg = str(err.value)
    assert "slide.h5ad" in msg and "integers but not counts" in msg and "raw UMI counts" in msg


def test_expected_measurement_is_the_poisson_expectation_at_each_spots_depth():
    """E[log1p(X 10^4 / L)], X ~ Poisson(L expm1(pred) / 10^4): exact below the switch, the expansion above it; a
    zero stays zero, and at a fixed expression a sparse gene's measured value rises with the spot's depth."""
    from scipy.stats import poisson

    from pertpipe.spatial.refine import expected_measurement

    lib = np.array([50.0, 500.0, 5000.0, 50000.0])
    for rate in (0.0, 0.05, 1.0, 20.0, 49.0, 60.0, 500.0):
        pred = np.log1p(rate * 1e4 / lib)[:, None]  # the prediction whose rate at each depth is `rate`
        x = np.arange(int(rate + 20 * np.sqrt(rate) + 40))
        exact = np.array([(poisson.pmf(x, rate) * np.log1p(x * 1e4 / L)).sum() for L in lib])
        np.testing.assert_allclose(expected_measurement(pred, lib)[:, 0], exact, atol=1e-3, rtol=1e-4)
    same = np.full((4, 1), 0.3, np.float32)  # one expression level, four depths
    out = expected_measurement(same, lib)[:, 0]
    assert np.all(np.diff(out) > 0) and out[-1] < 0.3 + 1e-3
    assert np.all(expected_measurement(np.zeros((4, 2), np.float32), lib) == 0)


def depth_pair(seed=0, n_sc=200, n_sp=150, n_genes=40, equal_depth=False):
    """Two cell types; shallow spots of one type each, whose depths differ 30-fold (or are all 300 counts), so
    most genes are sparse; HELD is a gene like the others."""
    rng = np.random.default_rng(seed)
    prof = rng.gamma(0.6, 1.0, (2, n_genes + 1))
    prof[0, :10] += 3
    prof[1, 10:20] += 3
    prof /= prof.sum(1, keepdims=True)
    t, ts = rng.integers(0, 2, n_sc), rng.integers(0, 2, n_sp)
    x_sc = rng.poisson(prof[t] * 2000)
    lib = np.full(n_sp, 300.0) if equal_depth else np.exp(rng.uniform(np.log(20), np.log(600), n_sp))
    x_sp = np.stack([rng.multinomial(int(n), p) for n, p in zip(lib, prof[ts])]) if equal_depth \
        else rng.poisson(prof[ts] * lib[:, None])
    genes = [f"G{j}" for j in range(n_genes)] + ["HELD"]
    scrna = ad.AnnData(X=sp.csr_matrix(x_sc.astype(np.float32)), var=pd.DataFrame(index=genes),
                       obs=pd.DataFrame({"cell_type": np.array(["A", "B"])[t]}, index=[f"c{i}" for i in range(n_sc)]))
    spatial = ad.AnnData(X=sp.csr_matrix(x_sp.astype(np.float32)), var=pd.DataFrame(index=genes),
                         obs=pd.DataFrame(index=[f"s{i}" for i in range(n_sp)]))
    spatial.obsm["spatial"] = rng.uniform(0, 10, (n_sp, 2))
    return spatial, scrna


def test_validation_keeps_the_depth_step_where_depth_drives_what_the_slide_measures():
    """Uneven shallow spots: the validation genes keep the depth step, and lrimpute then predicts the held-out gene
    better than without it (``lrimpute_no_depth``); ``depth_only`` is the reference of depth alone. Spots of equal
    depth: the step is off (it would only bend each gene monotonically)."""
    from pertpipe.evaluation.spatial import pcc
    from pertpipe.spatial.model import columns, log_normalize
    from pertpipe.spatial.validation import validate

    spatial, scrna = depth_pair()
    out, info = run_methods(spatial, scrna, ["HELD"], ["HELD"], None, FAST,
                            ["lrimpute", "lrimpute_no_depth", "depth_only"], heldout=["HELD"])
    truth = columns(log_normalize(spatial.X), [40])[:, 0]
    r = {m: pcc(v[:, 0], truth) for m, v in out.items()}
    assert info["validation"]["depth"] and info["validation"]["scores"]["depth"]["on"] > \
        info["validation"]["scores"]["depth"]["off"]
    assert r["lrimpute"] > r["lrimpute_no_depth"] + 0.03 and r["depth_only"] > 0.05
    even, scrna = depth_pair(equal_depth=True)
    val = validate(prepare(even, scrna, ["HELD"]), FAST, spatial=even, scrna=scrna, lr_genes=["HELD"])
    assert not val.depth and "depth" in val.scores


def test_ranks_per_gene_ranked_non_zeros_and_percentile_bins_are_refused(tmp_path):
    """Three transforms that keep integers but are not counts: each gene's values ranked across spots (0..n-1 or
    1..n), each gene's non-zero values ranked, and percentile bins 1..101 with (almost) no zeros. Each is refused at
    reading with the fix; the counts they came from pass."""
    from scipy.stats import rankdata

    from pertpipe.spatial.inputs import rank_like

    spatial, scrna = coexpression_pair()
    x = spatial.X.toarray()
    assert rank_like(x) is None
    by_gene0 = np.column_stack([rankdata(c, method="ordinal") - 1 for c in x.T])  # 0..n-1 within each gene
    by_gene1 = by_gene0 + 1
    nz_ranked = np.zeros_like(x)
    for j in range(x.shape[1]):
        nz = np.flatnonzero(x[:, j])
        nz_ranked[nz, j] = rankdata(x[nz, j], method="ordinal")
    pct = np.column_stack([np.ceil(rankdata(c) / len(c) * 100).astype(int) + 1 for c in x.T])  # 1..101
    pct[0, 0] = 0  # "almost" no zeros
    for bad, words in ((by_gene0, "genes are a permutation"), (by_gene1, "genes are a permutation"),
                       (nz_ranked, "genes are a permutation"), (pct, "percentile bins")):
        assert words in (rank_like(bad) or ""), words
        slide = spatial.copy()
        slide.X = sp.csr_matrix(bad.astype(np.float32))
        slide.write_h5ad(tmp_path / "slide.h5ad")
        scrna.write_h5ad(tmp_path / "ref.h5ad")
        with pytest.raises(ContractError, match="slide.h5ad.*integers but not counts.*raw UMI counts"):
            read_pair("h5ad_pair", {"spatial": str(tmp_path / "slide.h5ad"), "scrna": str(tmp_path / "ref.h5ad")})


def test_lower_case_mouse_symbols_match_the_resource_ignoring_case(tmp_path):
    """A pair whose symbols are written in lower case (`dll1`, `notch1`) against a mouse resource (`Dll1`, `Notch1`):
    the LR genes are found, spelled as the data spell them, and lr_genes.json says how many matched by case."""
    import anndata as ad

    from pertpipe.spatial.stages import run_lr_genes

    rng = np.random.default_rng(0)
    genes = ["dll1", "notch1", "tgfb1", "tgfbr1"] + [f"gm{i}" for i in range(8)]
    sc = ad.AnnData(X=sp.csr_matrix(rng.poisson(3, (60, len(genes))).astype(np.float32)),
                    obs=pd.DataFrame({"cell_type": ["a", "b"] * 30}, index=[f"c{i}" for i in range(60)]),
                    var=pd.DataFrame(index=genes))
    spatial = ad.AnnData(X=sp.csr_matrix(rng.poisson(3, (40, len(genes))).astype(np.float32)),
                         obs=pd.DataFrame(index=[f"s{i}" for i in range(40)]), var=pd.DataFrame(index=genes))
    spatial.obsm["spatial"] = rng.random((40, 2))
    sc.write_h5ad(tmp_path / "sc.h5ad")
    spatial.write_h5ad(tmp_path / "sp.h5ad")
    res = _commot_csv(tmp_path / "mouse.csv", [["Dll1", "Notch1", "NOTCH", "Contact"],
                                               ["Tgfb1", "Tgfbr1", "TGFb", "Secreted"],
                                               ["Wnt5a", "Fzd5", "WNT", "Secreted"]])
    info = run_lr_genes(str(tmp_path / "sp.h5ad"), str(tmp_path / "sc.h5ad"), str(res), "cellchatdb", "mouse",
                        min_mean=0.1, min_fraction=0.1, out_json=str(tmp_path / "lr.json"))
    assert sorted(info["lr_genes"]) == ["dll1", "notch1", "tgfb1", "tgfbr1"]
    assert info["symbols"] == {"resource_genes": 6, "matched_exactly": 0, "matched_ignoring_case": 4,
                               "not_in_data": 2}
    assert sorted(info["measured_in_spatial"]) == ["dll1", "notch1", "tgfb1", "tgfbr1"]
