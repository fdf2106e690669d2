"""Papalexi 2021 ECCITE-seq from its original R object (.rda, read with rdata) through the registry and mirror."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake

from pertpipe.data.sources import read_sceptre_rda

RDA = "perturb/papalexi2021/lowmoi_example_data.rda"


@pytest.mark.real
def test_read_sceptre_rda_matches_the_published_conversion(shared_data):
    a = read_sceptre_rda(shared_data / RDA)
    ref = ad.read_h5ad(shared_data / "perturb/papalexi2021/papalexi2021_thp1.h5ad")
    assert a.shape == (20729, 299) and a.obsm["grna_counts"].shape == (20729, 110)
    assert list(a.var_names) == list(ref.var_names)
    assert (a.X != ref.X).nnz == 0  # the same counts as the shared conversion
    assert int((np.asarray(a.uns["grna_targets"]) == "non-targeting").sum()) == 9
    assert list(a.obs["bio_rep"].unique()) == ["rep_1", "rep_2", "rep_3"]


@pytest.mark.real
@pytest.mark.workflow
def test_papalexi_stage1_from_the_registry(shared_data, tmp_path):
    cfg = {"dataset": "papalexi2021", "mirror": str(shared_data), "lock_file": None, "models": ["cell_mean"],
           "stage1": {"universe": {"kind": "source"}, "split": {"strategy": "random_unseen", "fraction": 0.25}}}
    run_snakemake(tmp_path, cfg, "stage1", "results/papalexi2021/stage1/knowledge_genes.txt")
    s1 = tmp_path / "results/papalexi2021/stage1"
    # a 299-gene panel that lacks most of its own targets: the knowledge stage describes them all the same
    readout = (s1 / "genes.txt").read_text().split()
    described = (s1 / "knowledge_genes.txt").read_text().split()
    targets = {t for t in [*ad.read_h5ad(s1 / "train.h5ad", backed="r").obs["target_gene"].astype(str),
                           *pd.read_csv(s1 / "template.csv")["target_gene"]] if t != "non-targeting"}
    assert described[:len(readout)] == readout and targets <= set(described)
    assert len(targets - set(readout)) >= 10  # most targets are outside the panel
    rep = json.loads((s1 / "stage1_report.json").read_text())
    st = rep["standardize"]
    # top guide >= 5 UMI and >= 80 % of the cell's guide UMI (the registry's thresholds)
    assert st["guide_assignment"]["unassigned"] == 4537 and st["n_cells"] == 16192
    assert st["n_control_cells"] == 1923 and st["scale_detected"] == "counts" and st["counts_layer"]
    assert st["source"].endswith("lowmoi_example_data.rda")
    assert "cells assigned from gRNA counts: 16,192 of 20,729" in (s1 / "stage1_report.txt").read_text()
    train = ad.read_h5ad(s1 / "train.h5ad")
    assert set(train.obs["batch"]) == {"rep_1", "rep_2", "rep_3"} and set(train.obs["cell_type"]) == {"THP-1"}
    # the knockouts are visible in the counts: STAT1 falls in its own knockout cells (if STAT1 trains)
    if "STAT1" in set(train.obs["target_gene"]):
        c = train.layers["counts"][:, list(train.var_names).index("STAT1")].toarray().ravel()
        ko = (train.obs["target_gene"] == "STAT1").to_numpy()
        nt = (train.obs["target_gene"] == "non-targeting").to_numpy()
        assert c[ko].mean() < 0.4 * c[nt].mean()
