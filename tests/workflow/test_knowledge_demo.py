"""The knowledge stage through Snakemake on the tiny demo: offline GO facets + MiniLM, and the LLM extractor."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import TINY_DEMO, ChatServer, run_snakemake

from pertpipe import perturbation_genes
from pertpipe.core.h5io import read_obs
from pertpipe.io import load_torch

pytestmark = pytest.mark.workflow

CFG = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500}}


def test_knowledge_offline_go_minilm(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {**CFG, "knowledge": {"cache_dir": str(tmp_path / "cache")}}
    run_snakemake(tmp_path, cfg, "knowledge")
    kn = tmp_path / "results/demo/knowledge"
    blob = load_torch(kn / "facet_embeddings.pt")
    s1 = tmp_path / "results/demo/stage1"
    genes = (s1 / "knowledge_genes.txt").read_text().split()
    readout = (s1 / "genes.txt").read_text().split()
    # the readout genes first, then every perturbation target the run names (training and held out)
    targets = {g for t in [*read_obs(s1 / "train.h5ad")["target_gene"], *pd.read_csv(s1 / "template.csv")["target_gene"]]
               for g in perturbation_genes(str(t))}
    assert genes[:len(readout)] == readout and targets <= set(genes) and len(set(genes)) == len(genes)
    assert blob["genes"] == genes and blob["tensor"].shape == (len(genes), 8, 384)
    assert blob["encoder"] == "minilm" and blob["mask"].sum() > 0
    masked = blob["mask"] == 0
    assert torch.all(blob["tensor"][masked] == 0)
    cov = json.loads((kn / "coverage.json").read_text())
    assert cov["fraction_with_any_facet"] >= 0.8
    sim = json.loads((tmp_path / "results/demo/raw/simulation.json").read_text())
    facets = pd.read_parquet(kn / "facets.parquet")
    for g in sim["unannotated_genes"]:
        assert (facets.loc[facets.gene == g, "text"] == "<NONE>").all()
    # rerun after touching the facet texts' upstream: embeddings come from the cache
    first = json.loads((kn / "facet_embeddings.json").read_text())
    run_snakemake(tmp_path, cfg, "knowledge", extra=("--forcerun", "facets"))
    second = json.loads((kn / "facet_embeddings.json").read_text())
    assert first["embedded_now"] > 0 and second["embedded_now"] == 0
    assert torch.equal(load_torch(kn / "facet_embeddings.pt")["tensor"], blob["tensor"])


def test_llm_extractor_through_the_workflow(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    srv = ChatServer()
    try:
        cfg = {**CFG, "knowledge": {"extractor": "llm", "cache_dir": str(tmp_path / "cache"),
                                    "llm": {"base_url": srv.base_url, "model": "scripted", "concurrency": 2,
                                            "retries": 1, "timeout": 5}}}
        run_snakemake(tmp_path, cfg, "knowledge")
    finally:
        srv.close()
    kn = tmp_path / "results/demo/knowledge"
    facets = pd.read_parquet(kn / "facets.parquet")
    n_genes = len((tmp_path / "results/demo/stage1/knowledge_genes.txt").read_text().split())
    assert len(srv.requests) == n_genes and set(facets["source"]) == {"llm"}
    cov = json.loads((kn / "coverage.json").read_text())
    assert cov["extractor"] == "llm" and cov["provenance"]["model"] == "scripted"
    assert cov["genes_per_facet"]["immune_response"] == 0  # the server answers <NONE> there
