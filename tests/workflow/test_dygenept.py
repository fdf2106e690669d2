"""DyGenePT on the tiny demo (CPU): learning, contract, kill-and-resume, attention, unseen targets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DEMO, fit_killed_after, predict_reloaded, run_snakemake

from pertpipe.models import build_model, load_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.prior import PRIOR_CANDIDATES

pytestmark = pytest.mark.workflow

FAST = {"epochs": 6, "steps_per_epoch": 8, "groups_per_step": 8, "cells_per_group": 16, "hidden": 64,
        "latent_dim": 16, "attn_dim": 16, "patience": 100}


@pytest.fixture(scope="module")
def demo(knowledge_demo):
    return knowledge_demo


def _fit(demo, tmp_path, **kw):
    torch.set_num_threads(1)
    m = build_model("dygenept", {**FAST, **kw}, seed=0)
    log = m.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path / "ckpt.pt")))
    return m, log


def test_loss_falls_and_predictions_follow_the_contract(demo, tmp_path):
    m, log = _fit(demo, tmp_path, epochs=10, prior="none")  # the network alone must learn
    curve = log["loss_curve"]
    assert len(curve) == 10 and curve[-1] <= 0.7 * curve[0]  # stated fraction: at least 30% lower
    assert log["cells_per_s"] > 0 and log["device"] == "cpu"
    _p, tpl = predict_reloaded(m, demo, tmp_path)
    m2 = load_model(tmp_path / "model.pt")
    # held-out targets (never in train) get target-specific predictions
    train_targets = set(ad.read_h5ad(demo["train"], backed="r").obs["target_gene"])
    unseen = [t for t in tpl.target_gene.unique() if t != "non-targeting" and t not in train_targets]
    x = np.abs(np.random.default_rng(0).normal(1, 0.5, size=(8, len(m2.genes))))
    shifts = [m2.predict_cell_shifts(t, "typeA", x) for t in unseen[:3]]
    assert all(np.abs(s).mean() > 1e-4 for s in shifts) and not np.allclose(shifts[0], shifts[1])


def test_attention_is_sparse_and_respects_the_mask(demo, tmp_path):
    m, _ = _fit(demo, tmp_path, epochs=2)
    net = m.net
    z = torch.randn(1, 5, m.pca_components.shape[0])
    K, D = m.facets.shape[1], m.facets.shape[2]
    f = torch.randn(1, 2, K, D)
    mask = torch.ones(1, 2, K)
    mask[0, 0, :3] = 0  # three <NONE> facets
    mask[0, 1] = 0  # second target: no facets at all
    t = torch.tensor([[1.0, 1.0]])
    with torch.no_grad():
        _change, alpha = net(z, f, mask, t)
    a = alpha[0, :, 0]  # [cells, heads, K] of the first target
    assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-5)
    assert torch.all(a[..., :3] == 0)  # masked facets get exactly zero
    assert torch.all(alpha[0, :, 1] == 0)  # a gene with no facet text gets no attention


def test_killed_and_resumed_gives_the_same_weights(demo, tmp_path):
    ckpt = tmp_path / "killed.pt"
    # residual auto trains two networks, each with its stage checkpoint: killed in the first, resumed there
    killed_at = fit_killed_after("dygenept", dict(FAST, epochs=8), demo["train"], demo["knowledge"], ckpt,
                                 watch=tmp_path / "killed.gain_facets.pt")
    assert killed_at is not None and killed_at < 8, "the run was not killed mid-training"
    torch.set_num_threads(1)
    resumed = build_model("dygenept", dict(FAST, epochs=8), seed=0)
    rlog = resumed.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(ckpt)))
    straight = build_model("dygenept", dict(FAST, epochs=8), seed=0)
    slog = straight.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path / "straight.pt")))
    a, b = resumed.net.state_dict(), straight.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rlog["loss_curve"] == slog["loss_curve"]


def test_dygenept_through_the_pipeline_with_attention_in_the_report(demo):
    wd = demo["wd"]
    cfg = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
           "knowledge": {"cache_dir": str(wd / "cache")}, "models": ["cell_mean", "dygenept", "dygenept_zero"],
           "model_params": {"dygenept": FAST, "dygenept_zero": {"model": "dygenept", **FAST, "shrinkage": 0}}}
    run_snakemake(wd, cfg, "all", timeout=1200)
    res = wd / "results/demo"
    # visible shrinkage: each shrunk model is scored raw too; λ, anchor and the baseline a λ = 0 row equals are shown
    board = pd.read_csv(res / "leaderboard.csv").set_index("model")
    assert {"cell_mean", "dygenept", "dygenept_raw", "dygenept_zero", "dygenept_zero_raw"} == set(board.index)
    # built on the validated baseline prior, the model is not shrunk toward the cell-type mean (a candidate already)
    assert board.loc["dygenept", "shrinkage"].startswith("none: built on the validated baseline prior")
    assert board.loc["dygenept", "lambda"] == 1.0
    log = __import__("json").loads((res / "stage2/dygenept/train_log.json").read_text())
    gamma = log["residual_gain"]["scale"]
    # a residual validated to γ = 0 makes the row its prior baseline, and the leaderboard says which
    if gamma == 0:
        assert board.loc["dygenept_raw", "equals"] == load_model(res / "stage2/dygenept/model.pt").prior.display_name
    else:
        assert pd.isna(board.loc["dygenept_raw", "equals"])
    assert board.loc["dygenept_zero", "lambda"] == 0.0 and board.loc["dygenept_zero", "equals"] == "cell_mean"
    for col in ("DES", "PDS", "MAE", "avg_score"):  # λ = 0 with the global anchor is cell_mean, score for score
        assert board.loc["dygenept_zero", col] == board.loc["cell_mean", col]
    assert board.loc["dygenept_zero_raw", "lambda"] == 1.0 and pd.isna(board.loc["dygenept_zero_raw", "equals"])
    assert "| dygenept_zero = cell_mean (λ 0) |" in (res / "leaderboard.md").read_text()
    assert board.loc["cell_mean", "standing"] == "strongest baseline"
    assert set(board.loc["dygenept_raw", ["standing"]]) <= {"better", "worse", "tie"}
    standing = __import__("json").loads((res / "standing.json").read_text())
    assert standing["verdict"].startswith("This dataset can") and standing["ceiling"]["perturbations"] > 0
    att = pd.read_parquet(res / "stage2/dygenept/attention.parquet")
    sums = att.groupby(["target_gene", "cell_type"])["weight"].sum()
    assert len(att) and np.allclose(sums, 1.0, atol=1e-4) and (att["weight"] == 0).any()
    assert len(pd.read_parquet(res / "stage2/cell_mean/attention.parquet")) == 0
    log = __import__("json").loads((res / "stage2/dygenept/train_log.json").read_text())
    assert log["loss_curve"] and log["cells_per_s"] > 0 and not (res / "stage2/dygenept/checkpoint.pt").exists()
    html = (res / "report.html").read_text()
    assert html.index("This dataset can") < html.index("<table")  # the verdict leads, before any table
    assert "dygenept_zero = cell_mean (λ 0)" in html
    assert "Facet attention" in html and html.count("data:image/png;base64,") >= 4
    # the page says what DyGenePT is built on and what its network added on the validation groups
    built = html[html.index("<h2>Built on a baseline</h2>"):html.index("<h2>Training</h2>")]
    assert "<td>dygenept</td>" in built and f"on {log['residual_gain']['groups']} groups" in built


def test_scgpt_querier_on_a_tiny_checkpoint(demo, tmp_path):
    from pertpipe.errors import ConfigError
    from pertpipe.models.scgpt import ScGPTEncoder, bin_expression, write_tiny_checkpoint

    genes = list(ad.read_h5ad(demo["train"], backed="r").var_names)
    ckpt = tmp_path / "scgpt"
    write_tiny_checkpoint(ckpt, genes[:250])  # the vocabulary covers part of the universe, as real ones do
    keys = set(torch.load(ckpt / "best_model.pt", weights_only=True))
    assert {"encoder.embedding.weight", "encoder.enc_norm.weight", "value_encoder.linear1.weight",
            "transformer_encoder.layers.1.self_attn.in_proj_weight", "transformer_encoder.layers.0.linear2.weight",
            "decoder.fc.0.weight"} <= keys  # scGPT's parameter names, decoder included (and ignored)
    assert bin_expression(np.array([[0.0, 0.5, 1.0, 2.0, 4.0]]), 5).tolist() == [[0, 1, 2, 3, 4]]
    enc = ScGPTEncoder(ckpt, genes)
    x = np.abs(np.random.default_rng(1).normal(1, 1, size=(6, len(genes)))) * (np.random.default_rng(2).random((6, len(genes))) > 0.5)
    e1, e2 = enc.embed(x), enc.embed(x)
    assert e1.shape == (6, 16) and np.array_equal(e1, e2) and not np.allclose(e1[0], e1[1])
    assert all(not p.requires_grad for p in enc.net.parameters())  # frozen
    m, log = _fit(demo, tmp_path, querier="scgpt", scgpt_checkpoint=str(ckpt), epochs=3)
    assert log["querier"] == "scgpt" and 0 < log["scgpt_gene_coverage"] < 1 and log["loss_curve"]
    m.save(tmp_path / "model.pt")
    m2 = load_model(tmp_path / "model.pt")
    xs = np.abs(np.random.default_rng(0).normal(1, 0.5, size=(5, len(m2.genes))))
    s = m2.predict_cell_shifts("CCY1", "typeA", xs)
    assert s.shape == xs.shape and np.isfinite(s).all()
    state = torch.load(ckpt / "best_model.pt", weights_only=True)
    del state["value_encoder.linear2.weight"]
    torch.save(state, ckpt / "best_model.pt")
    with pytest.raises(ConfigError, match="value_encoder.linear2.weight"):
        ScGPTEncoder(ckpt, genes)


def test_ctrl_c_during_training_is_one_line_and_keeps_the_checkpoint(demo, tmp_path):
    """Ctrl-C in the terminal (SIGINT to Snakemake's process group) while train_dygenept runs: the rule's log says in
    one line where the checkpoint is and that a re-run resumes — no KeyboardInterrupt traceback — and the
    checkpoint is there."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, with_test_profile, write_config

    wd = tmp_path / "wd"
    shutil.copytree(demo["wd"], wd, symlinks=True)
    cfg = with_test_profile({"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
                             "knowledge": {"cache_dir": str(demo["wd"] / "cache")}, "models": ["dygenept"],
                             "model_params": {"dygenept": {**FAST, "epochs": 400, "residual": "gain_facets"}}})
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "results/demo/stage2/dygenept/model.pt", "-s",
                             str(REPO / "Snakefile"), "--directory", str(wd), "--cores", "2", "--nolock",
                             "--configfile", str(write_config(wd, cfg))], cwd=wd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    ckpt = wd / "results/demo/stage2/dygenept/checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "training never wrote its checkpoint"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    log = (wd / "results/demo/logs/train_dygenept.log").read_text()
    assert "train_dygenept interrupted (Ctrl-C): the checkpoint" in log and "resumes training from it" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in out
    assert ckpt.exists() and not (wd / "results/demo/stage2/dygenept/model.pt").exists()


def test_prior_is_the_validated_baseline_and_gamma_zero_is_exactly_it(demo, tmp_path):
    m, log = _fit(demo, tmp_path)
    prior = log["prior"]
    assert prior["criterion"] == "score"
    # chosen by the avg_score-like validation score among the candidates and the blends of the two best (a blend
    # only when it beats both); the tiny demo trains too few doubles to choose them apart (MIN_KIND_TARGETS)
    assert "by_kind" not in prior
    scores = {c: sc["score"] for c, sc in prior["crossfit_score"].items()}
    assert scores[prior["chosen"]] == max(scores.values())
    assert set(PRIOR_CANDIDATES) < set(scores) and (prior["chosen"] in PRIOR_CANDIDATES or prior["blend"])
    gain = log["residual_gain"]
    assert gain["scale"] in (0.0, 0.25, 0.5, 0.75, 1.0) and set(gain["mse_by_scale"]) == {"0", "0.25", "0.5", "0.75", "1"}
    assert m.residual_scale == gain["scale"]
    # residual scale 0 on the ridge prior: the predictions are knowledge_ridge's, to the bit
    m0, log0 = _fit(demo, tmp_path, prior="knowledge_ridge", residual_scale=0)
    assert m0.equals() == "knowledge_ridge" and log0["residual_gain"]["how"] == "fixed"
    ridge = build_model("knowledge_ridge", {}, seed=0)
    ridge.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"]))
    x = np.abs(np.random.default_rng(0).normal(1, 0.5, size=(4, len(m0.genes))))
    tpl = pd.read_csv(demo["template"])
    for t in tpl.target_gene.unique()[:4]:
        if t == "non-targeting":
            continue
        assert np.array_equal(m0.predict_cell_shifts(t, "typeA", x)[0], ridge.predict_shift(t, "typeA"))
    # and it survives save / load
    m0.save(tmp_path / "m0.pt")
    back = load_model(tmp_path / "m0.pt")
    assert back.residual_scale == 0 and back.prior.name == "knowledge_ridge" and back.equals() == "knowledge_ridge"
