"""The L1000 path through Snakemake: the original cmapR level-5 file through stage 1 (z-scores, leave one cell
line out), context_mean and ctxfusion (a variant as an alias), the signature metrics and their leaderboard; the
GCTX with its side files (instance table, landmark map) through stage 1; cell models refused on signatures."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, open_in_browser, read_report, run_snakemake

pytestmark = pytest.mark.workflow

FAST = {"epochs": 4, "steps_per_epoch": 5, "d": 8, "hidden": 32}


def test_level5_leave_one_line_out_end_to_end(tmp_path, shared_data):
    cfg = {"dataset": "l1000_cmapr_level5", "mirror": str(shared_data), "lock_file": None,
           "models": ["context_mean", "ctxfusion", "ctxfusion_concat"],
           "model_params": {"ctxfusion": FAST, "ctxfusion_concat": {"model": "ctxfusion", "fusion": "concat", **FAST}},
           "stage1": {"universe": {"kind": "source"},
                      "split": {"strategy": "cell_line_holdout", "fraction": 1.0, "holdout_cell_type": "A375"}}}
    run_snakemake(tmp_path, cfg)
    res = tmp_path / "results" / "l1000_cmapr_level5"
    rep = json.loads((res / "stage1" / "stage1_report.json").read_text())
    assert rep["value_kind"] == "zscore" and rep["checks"]["log1p"] and rep["standardize"]["n_cells"] == 272
    assert rep["split"]["n_cells"] == {"train": 255, "val": 17, "drop": 0}  # all of A375's 17 signatures
    assert rep["zscores"]["contexts"] == 64 and rep["zscores"]["perturbations"] == 3
    assert "X holds z-scores" in (res / "stage1" / "stage1_report.txt").read_text()
    truth = ad.read_h5ad(res / "stage1" / "truth.h5ad")
    assert set(truth.obs.cell_type) == {"A375"} and truth.n_vars == 978 and truth.X.min() < 0
    board = pd.read_csv(res / "signature_leaderboard.csv")
    assert set(board.model) == {"context_mean", "ctxfusion", "ctxfusion_concat"}
    assert (board.n_signatures == 17).all() and board.pearson.between(-1, 1).all()
    assert board["precision@50"].between(0, 1).all()
    pred = ad.read_h5ad(res / "stage2" / "context_mean" / "predictions.h5ad")
    assert pred.n_obs == 17 and list(pred.var_names) == list(truth.var_names)
    # context_mean's prediction is the compound's mean signature over the other lines (stage 1's z-scores)
    z = ad.read_h5ad(res / "stage1" / "zscores.h5ad")
    vem = z[z.obs.target_gene == "vemurafenib"].layers["shift"].mean(0)
    np.testing.assert_allclose(np.asarray(pred[pred.obs.target_gene == "vemurafenib"].X)[0], vem, rtol=1e-4, atol=1e-5)
    log = json.loads((res / "stage2" / "ctxfusion_concat" / "train_log.json").read_text())
    assert log["model"] == "ctxfusion" and log["hparams"]["fusion"] == "concat" and log["gate"] is None
    md = (res / "signature_leaderboard.md").read_text()
    assert "| ctxfusion | A375 | 17 |" in md
    # the verdict: context_mean is the only baseline, so the strongest; the others' Δ pearson paired per signature
    v = board.set_index("model")
    assert v.loc["context_mean", "standing"] == "strongest baseline" and bool(v.loc["context_mean", "baseline"])
    for m in ("ctxfusion", "ctxfusion_concat"):
        assert v.loc[m, "standing"] in ("better", "worse", "tie") and v.loc[m, "vs_baseline"] == "context_mean"
        assert v.loc[m, "ci_low"] <= v.loc[m, "delta"] <= v.loc[m, "ci_high"]
        assert v.loc[m, "delta"] == pytest.approx(v.loc[m, "pearson"] - v.loc["context_mean", "pearson"])
    assert "| model | standing | Δ pearson vs strongest baseline [95 % CI] |" in md
    html, imgs, links = read_report(res / "report.html")
    assert "pertpipe report: l1000_cmapr_level5 (Signatures (L1000))" in html and len(imgs) >= 2
    assert "A375" in html and "ctxfusion_concat" in html and "signature_leaderboard.md" in links
    sizes, console = open_in_browser(res / "report.html")
    assert len(sizes) == len(imgs) and all(w > 0 for w, _ in sizes) and console == []


def test_gctx_with_side_files_through_stage1(tmp_path, shared_data):
    cfg = {"dataset": "l1000_slinky_mcf7", "mirror": str(shared_data), "lock_file": None,  # default universe kind
           "models": ["context_mean"], "stage1": {"split": {"strategy": "random_unseen", "fraction": 0.5}}}
    run_snakemake(tmp_path, cfg, "stage1")
    res = tmp_path / "results" / "l1000_slinky_mcf7"
    assert ((tmp_path / "resources/downloads/l1000_slinky_inst_info/slinky_demo_inst_info.txt").read_bytes()
            == (SHARED_DATA / "l1000/slinky/slinky_demo_inst_info.txt").read_bytes())
    std = json.loads((res / "stage1" / "standardize.json").read_text())
    assert std["n_genes"] == 978 and std["n_plates"] == 10 and std["level_in"] == 3
    assert std["values"].startswith("level 3 -> level 4 robust z per plate")
    assert "L1000: the landmark genes of the source are the universe" in (res / "stage1/stage1_report.txt").read_text()


def test_cell_models_are_refused_on_signatures(tmp_path, shared_data):
    cfg = {"dataset": "l1000_cmapr_level5", "mirror": str(shared_data), "lock_file": None,
           "models": ["context_mean", "dygenept"]}
    proc = run_snakemake(tmp_path, cfg, extra=("-n",), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "is a signatures task" in out and "['dygenept'] do not predict it" in out and "(context_mean, ctxfusion)" in out


def test_own_gct_file_as_a_dataset(tmp_path, shared_data):
    """A user's own L1000 plate (GCT text) by path: the `datasets:` entry a user writes, through stage 1."""
    cfg = {"dataset": "my_plate", "models": ["context_mean"],
           "datasets": {"my_plate": {"path": str(shared_data / "l1000" / "LJP005_A375_24H.gct"), "adapter": "l1000",
                                     "adapter_options": {"level": 3}}},
           "stage1": {"split": {"strategy": "random_unseen", "fraction": 0.25}}}
    run_snakemake(tmp_path, cfg, "stage1")
    rep = json.loads((tmp_path / "results/my_plate/stage1/stage1_report.json").read_text())
    assert rep["value_kind"] == "zscore" and rep["standardize"]["n_control_cells"] == 26
    assert rep["standardize"]["n_perturbations"] == 59 and rep["zscores"]["contexts"] == 1


def test_one_line_plate_with_cell_type_through_stage1(tmp_path):
    """cmapR's kd_gct (one plate, no cell column; registry entry l1000_cmapr_kd sets adapter_options.cell_type),
    downloaded through a mirror (sha256 checked) and taken through stage 1."""
    import shutil

    src = REPO / "tests" / "data" / "cmapR" / "kd_gct.RData"
    (tmp_path / "mirror/l1000/cmapR").mkdir(parents=True)
    shutil.copy(src, tmp_path / "mirror/l1000/cmapR/kd_gct.RData")
    cfg = {"dataset": "l1000_cmapr_kd", "mirror": str(tmp_path / "mirror"), "lock_file": None,
           "models": ["context_mean"], "stage1": {"universe": {"kind": "source"},
                                                  "split": {"strategy": "random_unseen", "fraction": 0.25}}}
    run_snakemake(tmp_path, cfg, "stage1")
    res = tmp_path / "results" / "l1000_cmapr_kd"
    rep = json.loads((res / "stage1" / "stage1_report.json").read_text())
    assert rep["value_kind"] == "zscore" and rep["standardize"]["n_cells"] == 374
    assert rep["zscores"]["contexts"] == 1 and rep["standardize"]["n_control_cells"] == 40
    truth = ad.read_h5ad(res / "stage1" / "truth.h5ad")
    assert set(truth.obs.cell_type) == {"LITMUS.KD017"} and truth.n_vars == 976
