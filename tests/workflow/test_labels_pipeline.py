"""The labels task end to end with real Snakemake on PerturbQA's real files (through the mirror): three lines,
leave one line out, the cross-context baseline, the label leaderboard beside the published rows; and a bad labels
file stopped in stage 1 with the file, the field and the fix, nothing written."""

from __future__ import annotations

import json

import pandas as pd
from conftest import open_in_browser, read_report, run_snakemake


def test_perturbqa_lines_leave_one_line_out(tmp_path, shared_data):
    cfg = {"dataset": "perturbqa_lines", "mirror": str(shared_data), "downloads": str(tmp_path / "downloads"),
           "models": ["xctx_rate"], "stage1": {"split": {"strategy": "cell_line_holdout", "holdout_cell_type": "hepg2"}}}
    run_snakemake(tmp_path, cfg)
    res = tmp_path / "results" / "perturbqa_lines"
    rep = json.loads((res / "stage1" / "labels_report.json").read_text())
    assert rep["split"]["holdout"] == "hepg2" and rep["split"]["perturbations"]["test"] == 278
    assert rep["split"]["test_in_other_lines"] > 200 and "Non-Commercial" in rep["standardize"]["licence"]
    assert "Non-Commercial" in (res / "stage1" / "labels_report.txt").read_text()
    board = pd.read_csv(res / "label_leaderboard.csv")
    ours = board[board.source == "pertpipe"].set_index("model")
    assert list(ours.index) == ["xctx_rate"] and ours.loc["xctx_rate", "auc_de"] > 0.55  # measured ~0.6
    assert ours.loc["xctx_rate", "n_genes_de"] > 100
    md = (res / "label_leaderboard.md").read_text()
    assert "Non-Commercial" in md and "| model | standing | Δ auc_de vs strongest baseline [95 % CI] |" in md
    assert ours.loc["xctx_rate", "standing"] == "strongest baseline" and "| xctx_rate (baseline) |" in md
    assert (res / "label_leaderboard.png").stat().st_size > 1000
    assert not (res / "knowledge").exists()  # no configured model reads knowledge
    page, imgs, links = read_report(res / "report.html")
    assert len(imgs) == 1 and "label_leaderboard.csv" in links and "stage2/xctx_rate/train_log.json" in links
    sizes, console = open_in_browser(res / "report.html")
    assert len(sizes) == 1 and sizes[0][0] > 0 and console == []
    assert "Perturbation labels (PerturbQA)" in page and "Non-Commercial" in page and "xctx_rate" in page
    assert "held-out line hepg2" in page and "SUMMER" not in page  # published rows only for one-line datasets
    # labels.h5ad with label codes changed in place (same size): labels_split refuses it instead of splitting it
    import h5py
    import numpy as np

    labels = res / "stage1/labels.h5ad"
    size = labels.stat().st_size
    with h5py.File(labels, "r+") as f:
        x = f["X"] if isinstance(f["X"], h5py.Dataset) else f["X/data"]
        flat = np.asarray(x[...]).ravel()
        flat[:219] = np.where(flat[:219] == 1, 0, 1)
        x[...] = flat.reshape(x.shape)
    assert labels.stat().st_size == size
    proc = run_snakemake(tmp_path, cfg, extra=("--forcerun", "labels_split"), check=False)
    log = (res / "logs/labels_split.log").read_text()
    assert proc.returncode != 0 and "labels.h5ad: field 'sha256'" in log and "rule labels_standardize recorded" in log



def test_a_bad_labels_file_stops_stage1_and_writes_nothing(tmp_path):
    de = tmp_path / "mine-de.csv"
    de.write_text("pert,gene,label,split\nTP53,MDM2,1,train\nTP53,CDKN1A,2,train\nMYC,MDM2,0,test\n")
    dr = tmp_path / "mine-dir.csv"
    dr.write_text("pert,gene,label,split\nTP53,MDM2,1,train\n")
    cfg = {"dataset": "mine", "models": ["xctx_rate"], "stage1": {"split": {"strategy": "given"},
                                                                  "universe": {"alias_rescue": False}},
           "datasets": {"mine": {"path": str(de), "adapter": "perturbqa", "adapter_options": {"dir": str(dr)}}}}
    proc = run_snakemake(tmp_path, cfg, "stage1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(de) in out and "column label" in out and "'2'" in out and "Fix:" in out
    assert not (tmp_path / "results" / "mine" / "stage1" / "labels.h5ad").exists()
