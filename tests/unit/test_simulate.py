"""The demo simulator: deterministic, the promised structure, real context-dependent effects, annotations."""

import gzip
import json

import anndata as ad
import numpy as np
import pytest

from pertpipe.data.simulate import DemoParams, simulate_demo
from pertpipe.io import sha256_file

SMALL = DemoParams(n_genes=300, n_single_targets=12, n_double_targets=3, cells_per_target=60, n_control_cells=200)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return simulate_demo(out, seed=3, params=SMALL)


def test_deterministic(demo, tmp_path):
    again = simulate_demo(tmp_path, seed=3, params=SMALL)
    for key in demo:
        assert sha256_file(demo[key]) == sha256_file(again[key]), key
    other = simulate_demo(tmp_path / "o", seed=4, params=SMALL)
    assert sha256_file(other["counts"]) != sha256_file(demo["counts"])


def test_structure(demo):
    a = ad.read_h5ad(demo["counts"])
    truth = json.loads(demo["simulation"].read_text())
    assert set(a.obs["cell_type"]) == {"typeA", "typeB"} and set(a.obs["batch"]) == {"batch1", "batch2"}
    assert (a.obs["target_gene"] == "non-targeting").sum() == 2 * SMALL.n_control_cells
    doubles = [t for t in a.obs["target_gene"].unique() if "+" in t]
    assert len(doubles) == SMALL.n_double_targets == len(truth["doubles"])
    x = a.X.toarray()
    assert np.all(x == np.round(x)) and x.min() >= 0  # raw counts
    lib = x.sum(1)
    assert lib.std() / lib.mean() > 0.25  # library-size variation
    assert any(v["no_effect"] for v in truth["targets"].values())
    # naming quirks for alignment: aliases in the raw var, extras, unmeasured universe genes
    universe = demo["universe"].read_text().split()
    assert set(truth["aliases"]) <= set(a.var_names) and not set(truth["aliases"]) & set(universe)
    assert set(truth["extra_genes"]) <= set(a.var_names)
    assert not set(truth["unmeasured_genes"]) & set(a.var_names)


def _delta(a, target, ct):
    x = np.log1p(a.X.toarray() / np.asarray(a.X.sum(1)) * 1e4)
    sel = lambda t: ((a.obs["target_gene"] == t) & (a.obs["cell_type"] == ct)).to_numpy()  # noqa: E731
    d = x[sel(target)].mean(0) - x[sel("non-targeting")].mean(0)
    d[list(a.var_names).index(target)] = 0  # the knocked-down gene itself
    return d


def test_effects_depend_on_cell_type_and_some_are_null(demo):
    a = ad.read_h5ad(demo["counts"])
    truth = json.loads(demo["simulation"].read_text())
    eff = {t: (np.abs(_delta(a, t, "typeA")).mean(), np.abs(_delta(a, t, "typeB")).mean())
           for t, v in truth["targets"].items() if not v["no_effect"]}
    null = [np.abs(_delta(a, t, "typeA")).mean() for t, v in truth["targets"].items() if v["no_effect"]]
    strongest = max(max(v) for v in eff.values())
    assert max(null) < 0.5 * strongest
    # context dependence: for most effective targets one cell type responds much more than the other
    ratios = [max(x, y) / min(x, y) for x, y in eff.values()]
    assert np.median(ratios) > 1.5


def test_target_knockdown(demo):
    a = ad.read_h5ad(demo["counts"])
    t = next(iter(json.loads(demo["simulation"].read_text())["targets"]))
    j = list(a.var_names).index(t)
    x = a.X.toarray() / np.asarray(a.X.sum(1))
    assert x[(a.obs["target_gene"] == t).to_numpy(), j].mean() < 0.4 * x[(a.obs["target_gene"] == "non-targeting").to_numpy(), j].mean()


def test_annotation_files_in_standard_formats(demo):
    with gzip.open(demo["gene_info"], "rt") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in fh]
    assert header[:3] == ["#tax_id", "GeneID", "Symbol"] and len(rows) == SMALL.n_genes
    assert all(len(r) == len(header) for r in rows)
    with gzip.open(demo["gene2go"], "rt") as fh:
        assert fh.readline().startswith("#tax_id\tGeneID\tGO_ID\tEvidence")
        g2g = [line.split("\t") for line in fh]
    obo = demo["go_obo"].read_text()
    ids = {line.split(": ")[1] for line in obo.splitlines() if line.startswith("id: ")}
    assert {"GO:0006355", "GO:0007049", "GO:0008219", "GO:0006955"} <= ids
    assert {r[2] for r in g2g} <= ids  # every annotated term is defined
    assert "relationship: regulates" in obo and "relationship: part_of" in obo


@pytest.mark.parametrize("regime,lo,hi,det_lo,det_hi", [("sparse", 0.01, 0.03, 10, 100), ("typical", 0.10, 0.20, 100, 800)])
def test_realism_presets_match_their_count_regime(tmp_path, regime, lo, hi, det_lo, det_hi):
    import anndata as ad

    from pertpipe.data.simulate import DemoParams, count_statistics, simulate_demo

    p = DemoParams.from_config({"realism": regime, "n_single_targets": 10, "n_double_targets": 0,
                                "cells_per_target": 20, "n_control_cells": 100})
    assert p.n_genes == 2000 and p.realism == regime
    stats = count_statistics(ad.read_h5ad(simulate_demo(tmp_path, seed=1, params=p)["counts"]).X)
    assert lo <= stats["nonzero_fraction"] <= hi
    assert det_lo <= stats["detected_median"] <= det_hi
    assert 1.0 <= stats["mean_var_loglog_slope"] <= 1.6  # overdispersed, as 10x counts are
    # a value set explicitly wins over the preset
    assert DemoParams.from_config({"realism": "sparse", "library_size": 300.0}).library_size == 300.0
