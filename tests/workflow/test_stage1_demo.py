"""Stage 1 through the real Snakemake CLI on a tiny demo: outputs, reruns, reproducibility, config errors."""

from __future__ import annotations

import json
import re
import shutil

import anndata as ad
import pandas as pd
import pytest
from conftest import TINY_DEMO, run_snakemake

from pertpipe.io import sha256_file

pytestmark = pytest.mark.workflow

CFG = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500}}
RULES = ("simulate_demo", "standardize", "align_genes", "split", "ground_truth", "stage1_report")


def rules_run(stdout_stderr: str) -> set[str]:
    """Rules Snakemake executed, read from its job-stats table."""
    m = re.search(r"Job stats:\n(.*?)\n\n", stdout_stderr, re.S)
    if not m:
        return set()
    rows = [line.split() for line in m.group(1).splitlines()[2:]]
    return {r[0] for r in rows if len(r) == 2 and r[0] != "total"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("s1demo")
    proc = run_snakemake(wd, CFG, "stage1")
    return wd, proc


def test_stage1_outputs_and_report(demo_run):
    wd, proc = demo_run
    s1 = wd / "results" / "demo" / "stage1"
    assert rules_run(proc.stdout + proc.stderr) >= set(RULES)
    rep = json.loads((s1 / "stage1_report.json").read_text())
    assert rep["checks"]["gene_order_match"] == 1.0
    assert rep["checks"]["train_val_target_overlap"] == 0 and rep["checks"]["leakage"] == "none"
    sim = json.loads((wd / "results/demo/raw/simulation.json").read_text())
    assert rep["alignment"]["rescued_pairs"] == sim["aliases"]
    assert rep["alignment"]["filled_with_zeros"] == len(sim["unmeasured_genes"])
    assert rep["alignment"]["dropped_genes"] == sim["extra_genes"]
    train, val, truth = (ad.read_h5ad(s1 / f) for f in ("train.h5ad", "val.h5ad", "truth.h5ad"))
    assert list(train.var_names) == (s1 / "genes.txt").read_text().split() == list(truth.var_names)
    assert train.n_vars == TINY_DEMO["n_genes"]
    assert "non-targeting" in set(train.obs.target_gene) and "non-targeting" in set(val.obs.target_gene)
    assert not (set(train.obs.target_gene) & set(val.obs.target_gene)) - {"non-targeting"}
    assert truth.n_obs == val.n_obs and "counts" in train.layers
    txt = (s1 / "stage1_report.txt").read_text()
    assert "[PASS] gene order matches the universe: 100.00%" in txt and "FAIL" not in txt
    for rule in RULES:  # every rule logs and benchmarks
        assert (wd / "results/demo/logs" / f"{rule}.log").stat().st_size > 0
        bench = pd.read_csv(wd / "results/demo/benchmarks" / f"{rule}.tsv", sep="\t")
        assert len(bench) == 1 and bench["s"].iloc[0] >= 0 and "max_rss" in bench.columns
    assert "done split" in (wd / "results/demo/logs/split.log").read_text()


def test_changing_a_split_parameter_reruns_only_split_and_later(demo_run, tmp_path):
    src, _ = demo_run
    wd = tmp_path / "rerun"
    shutil.copytree(src, wd, symlinks=True)
    s1 = wd / "results/demo/stage1"
    before = {f: (s1 / f).stat().st_mtime_ns for f in ("standardized.h5ad", "aligned.h5ad", "train.h5ad")}
    nothing = run_snakemake(wd, CFG, "stage1")
    assert rules_run(nothing.stdout + nothing.stderr) == set() and "Nothing to be done" in nothing.stdout + nothing.stderr
    cfg = json.loads(json.dumps(CFG))
    cfg["stage1"]["split"] = {"fraction": 0.4}
    proc = run_snakemake(wd, cfg, "stage1")
    ran = rules_run(proc.stdout + proc.stderr)
    assert ran == {"split", "ground_truth", "zscores", "stage1_report", "stage1"}
    assert (s1 / "standardized.h5ad").stat().st_mtime_ns == before["standardized.h5ad"]
    assert (s1 / "aligned.h5ad").stat().st_mtime_ns == before["aligned.h5ad"]
    assert (s1 / "train.h5ad").stat().st_mtime_ns != before["train.h5ad"]
    assert json.loads((s1 / "split.json").read_text())["params"]["fraction"] == 0.4


def test_same_config_same_files(demo_run, tmp_path):
    src, _ = demo_run
    wd = tmp_path / "again"
    run_snakemake(wd, CFG, "stage1")
    for f in ("raw/demo_counts.h5ad", "stage1/train.h5ad", "stage1/val.h5ad", "stage1/truth.h5ad",
              "stage1/pseudobulk.parquet", "stage1/split.json", "stage1/template.csv", "stage1/genes.txt"):
        assert sha256_file(src / "results/demo" / f) == sha256_file(wd / "results/demo" / f), f


def test_intermediates_can_be_temporary(tmp_path):
    """keep_intermediates: false deletes standardized/aligned once split has read them; a split change re-makes
    them (and deletes them again)."""
    cfg = {**CFG, "stage1": {"chunk_size": 500, "keep_intermediates": False}}
    first = run_snakemake(tmp_path, cfg, "stage1")
    s1 = tmp_path / "results/demo/stage1"
    assert rules_run(first.stdout + first.stderr) >= set(RULES)
    assert not (s1 / "standardized.h5ad").exists() and not (s1 / "aligned.h5ad").exists()
    assert ad.read_h5ad(s1 / "train.h5ad").n_vars == TINY_DEMO["n_genes"] and ad.read_h5ad(s1 / "truth.h5ad").n_obs > 0
    again = run_snakemake(tmp_path, cfg, "stage1")
    assert "Nothing to be done" in again.stdout + again.stderr
    cfg["stage1"]["split"] = {"fraction": 0.4}
    proc = run_snakemake(tmp_path, cfg, "stage1")
    assert {"standardize", "align_genes", "split"} <= rules_run(proc.stdout + proc.stderr)
    assert not (s1 / "aligned.h5ad").exists()
    assert json.loads((s1 / "split.json").read_text())["params"]["fraction"] == 0.4


@pytest.mark.parametrize("cfg, words", [
    ({"stage1": {"chunksize": 5}}, "chunksize"),
    ({"stage1": {"chunk_size": "big"}}, "chunk_size"),
    ({"stage1": {"split": {"strategy": "lucky"}}}, "lucky"),
    ({"dataset": "norman2020"}, "unknown dataset 'norman2020'"),
    ({"models": ["cell_mean", "cpa"]}, "unknown model 'cpa'"),
    ({"model_params": {"linear": {"depth": 3}}}, "unknown hyperparameter(s) ['depth']"),
])
def test_invalid_config_stops_with_the_key(tmp_path, cfg, words):
    proc = run_snakemake(tmp_path, cfg, "stage1", check=False)
    assert proc.returncode != 0
    assert words in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_failed_rule_leaves_no_partial_output(tmp_path):
    universe = tmp_path / "universe.txt"
    universe.write_text("\n".join(f"NOTAGENE{i}" for i in range(100)) + "\n")
    cfg = {**CFG, "stage1": {"chunk_size": 500, "universe": {"kind": "file", "path": str(universe)}}}
    proc = run_snakemake(tmp_path, cfg, "stage1", check=False)
    assert proc.returncode != 0
    s1 = tmp_path / "results/demo/stage1"
    assert (s1 / "standardized.h5ad").exists() and not (s1 / "aligned.h5ad").exists()
    assert not [p for p in s1.iterdir() if ".tmp-" in p.name]
    log = (tmp_path / "results/demo/logs/align_genes.log").read_text()
    assert "align_genes failed" in log and "min_source_matched" in log and "Fix:" in log


def test_snakemake_lint_is_clean(tmp_path):
    proc = run_snakemake(tmp_path, None, extra=("--lint",))
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
