"""The spatial branch through Snakemake: the mouse hypothalamus MERFISH pair from its original CSV files (through
the mirror) with every rule, and a user's own pair of h5ad files (a slice of the lymph node data) by path."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, open_in_browser, read_report, run_snakemake

pytestmark = pytest.mark.workflow

FAST_MODEL = {"k": 10, "latent_dim": 8, "hidden": 32, "encoder_epochs": 5, "decoder_epochs": 10}


def test_merfish_pair_end_to_end(tmp_path, shared_data):
    cfg = {"mirror": str(shared_data), "lock_file": None,
           "spatial": {"datasets": ["hypothalamus_merfish"], "lr_resource": "cellchatdb", "model": FAST_MODEL,
                       "evaluate": {"folds": 2, "max_genes": 6, "tangram_epochs": 10,
                                    "methods": ["lrimpute", "lrimpute_no_ppi", "lrimpute_no_lt", "knn_mean",
                                                "hvg_ae", "tangram"]}}}
    run_snakemake(tmp_path, cfg, "spatial")
    res = tmp_path / "results" / "hypothalamus_merfish" / "spatial"
    # the original files, downloaded through the mirror byte for byte
    assert ((tmp_path / "resources/downloads/merfish_counts/counts.csv").read_bytes()
            == (SHARED_DATA / "spatial/hypothalamus_merfish/spatialrna_counts.csv").read_bytes())
    assert ((tmp_path / "resources/downloads/cellchatdb_mouse/CellChatDB.ligrec.mouse.csv").read_bytes()
            == (SHARED_DATA / "priors/commot_LRdatabase/CellChat/CellChatDB.ligrec.mouse.csv").read_bytes())
    inputs = json.loads((res / "inputs.json").read_text())
    assert inputs["spatial"]["n_spots"] == 750 and inputs["scrna"]["n_cells"] == 1308 and inputs["shared_genes"] == 134
    lr = json.loads((res / "lr_genes.json").read_text())
    assert lr["resource"] == "cellchatdb" and lr["species"] == "mouse"
    assert lr["n_lr_genes_expressed"] == len(lr["lr_genes"]) > 0 and set(lr["measured_in_spatial"]) <= set(lr["lr_genes"])
    pri = json.loads((res / "priors.json").read_text())
    assert "orthologues by name" in pri["species_note"] and pri["n_genes"] == len(lr["lr_genes"])
    knn = ad.read_h5ad(res / "knn_labels.h5ad")
    assert knn.shape == (750, len(lr["lr_genes"]))
    imp = ad.read_h5ad(res / "imputed.h5ad")
    x, masked = np.asarray(imp.X), knn.layers["mask"] == 0
    floor = np.broadcast_to(x.min(0), x.shape)  # a masked spot holds the gene's floor: 0, or the validated offset
    assert list(imp.var_names) == lr["lr_genes"] and masked.any() and np.all(x[masked] == floor[masked])
    per_gene = pd.read_csv(res / "evaluation/per_gene.csv")
    assert per_gene.gene.nunique() == 6 and set(per_gene.method) == {"lrimpute", "lrimpute_no_ppi", "lrimpute_no_lt",
                                                                      "knn_mean", "hvg_ae", "tangram"}
    assert per_gene.pcc.between(-1, 1).all() and (per_gene.js >= 0).all()
    ev = json.loads((res / "evaluation/evaluation.json").read_text())
    assert ev["n_heldout_genes"] == 6 and len(ev["folds"]) == 2 and set(ev["lrimpute_vs"]) >= {"knn_mean", "tangram"}
    comm = json.loads((res / "communication.json").read_text())
    assert comm["after"]["n_pairs_scored"] >= comm["before"]["n_pairs_scored"]
    text = (res / "spatial_report.txt").read_text()
    assert "Held-out LR genes (6)" in text and "tangram" in text and "Communication recovery" in text
    assert (res / "figures/maps.png").stat().st_size > 10_000 and (res / "figures/metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((res / "spatial_report.json").read_text())
    assert set(rep["artifacts"]) >= {"imputed", "evaluation", "communication", "heldout"}
    page, imgs, links = read_report(res.parent / "report.html")  # the run's one page, the writer every task uses
    assert {"spatial/evaluation/per_gene.csv", "spatial/spatial_report.json", "spatial/figures/maps.png"} <= set(links)
    sizes, console = open_in_browser(res.parent / "report.html")  # a real headless Chromium
    assert len(sizes) == len(imgs) == 2 and all(w > 0 and h > 0 for w, h in sizes) and not console
    assert "<h1>pertpipe report: hypothalamus_merfish (Spatial LR imputation)</h1>" in page and "Held-out LR genes (6)" in page
    assert "tangram" in page and "Communication recovery" in page
    knn_info = json.loads((res / "knn_labels.json").read_text())["validation"]  # chosen on visible genes only
    assert knn_info["n_validation_genes"] > 0 and set(knn_info["scores"]) >= {"residual", "smooth"}
    # k matched cells per spot from the chosen neighbour set; "both" stacks the latent and the principal-vector sets
    assert knn.obsm["knn"].shape == (750, knn_info["k"] * (2 if knn_info["neighbours"] == "both" else 1))
    assert len(ev["validation_per_fold"]) == 2 and "What the validation genes chose" in page
    assert json.loads((res / "lrimpute/train.json").read_text())["priors_used"]["ppi"] == knn_info["ppi"]
    assert not list(res.rglob("*checkpoint*.pt"))  # the shared loop's resume checkpoints, removed once done
    bench = tmp_path / "results" / "hypothalamus_merfish" / "benchmarks"
    for rule in ("inputs", "lr_genes", "priors", "knn_labels", "train_lrimpute", "impute", "evaluate",
                 "communication", "report"):  # every spatial rule logs and benchmarks
        assert pd.read_csv(bench / f"spatial_{rule}.tsv", sep="\t")["s"].iloc[0] >= 0
        assert (tmp_path / "results" / "hypothalamus_merfish" / "logs" / f"spatial_{rule}.log").stat().st_size > 0


def test_users_own_h5ad_pair(tmp_path, shared_data):
    d = shared_data / "spatial/lymph_visium"
    spatial = ad.read_h5ad(d / "spacexr_lymph_visium.h5ad")[:250].copy()
    scrna = ad.read_h5ad(d / "spacexr_lymph_ref_scrna.h5ad")
    scrna.obs = scrna.obs.rename(columns={"cell_type": "annotation"})
    spatial.write_h5ad(tmp_path / "my_slide.h5ad")
    scrna.write_h5ad(tmp_path / "my_reference.h5ad")
    cfg = {"lock_file": None, "mirror": str(shared_data),
           "spatial_datasets": {"my_node": {"species": "human", "adapter_options": {"cell_type_col": "annotation"},
                                            "inputs": {"spatial": "my_slide.h5ad", "scrna": "my_reference.h5ad"}}},
           "spatial": {"datasets": ["my_node"], "lr_resource": "cellphonedb", "model": FAST_MODEL,
                       "priors": {"ppi": "iref", "ligand_target": "none"},
                       "evaluate": {"folds": 2, "max_genes": 4, "methods": ["lrimpute", "knn_mean"]}}}
    run_snakemake(tmp_path, cfg, "spatial")
    res = tmp_path / "results" / "my_node" / "spatial"
    inputs = json.loads((res / "inputs.json").read_text())
    assert inputs["spatial"]["n_spots"] == 250 and inputs["scrna"]["cell_types"]["B"] == 30
    assert json.loads((res / "priors.json").read_text())["ppi"] == "iref"
    assert "Held-out LR genes (4)" in (res / "spatial_report.txt").read_text()
    # the branch's artifacts are verified like every other: a slide changed after spatial_inputs wrote it (same
    # size, one byte) stops the next rule that reads it, naming the file, its sha256 and the rule to re-run
    slide = res / "inputs" / "spatial.h5ad"
    raw = bytearray(slide.read_bytes())
    raw[-1] ^= 1
    slide.write_bytes(bytes(raw))
    proc = run_snakemake(tmp_path, cfg, "spatial", extra=("--forcerun", "lr_genes"), check=False)
    log = (tmp_path / "results/my_node/logs/spatial_lr_genes.log").read_text()
    assert proc.returncode != 0 and "spatial.h5ad: field 'sha256'" in log and "rule spatial_inputs recorded" in log
    # a missing cell-type column: the rule fails, names the file, the field and the fix, and leaves no output
    cfg["spatial_datasets"]["my_node"]["adapter_options"] = {"cell_type_col": "celltype"}
    cfg["results"] = "results2"
    proc = run_snakemake(tmp_path, cfg, "spatial", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results2/my_node/logs/spatial_inputs.log").read_text()
    assert "my_reference.h5ad: field 'obs['celltype']': absent" in log and "Fix: set adapter_options.cell_type_col" in log
    assert not (tmp_path / "results2/my_node/spatial/inputs/spatial.h5ad").exists()
