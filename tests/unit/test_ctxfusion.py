"""Cross-context transfer: per-context z-scores by hand, context_mean, and ctxfusion's gate, ablations, unseen
context and kill-and-resume."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import fit_killed_after

from pertpipe import CONTROL_LABEL
from pertpipe.data.zscores import ContextStats, context_stats
from pertpipe.models import build_model, load_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.modules.ctxfusion import CtxFusionModule

FAST = {"epochs": 6, "steps_per_epoch": 4, "d": 8, "hidden": 16, "pca_dim": 4, "batch_size": 8}


def write_contexts(path, *, n_ctx: int = 3, n_pert: int = 8, n_genes: int = 20, cells: int = 12, seed: int = 0,
                   drop: tuple[str, str] | None = None):
    """log1p cells of n_ctx contexts; perturbation p shifts gene p by a context-dependent amount."""
    rng = np.random.default_rng(seed)
    rows, obs = [], []
    for c in range(n_ctx):
        base = rng.uniform(0.5, 2.0, n_genes)
        for p in [CONTROL_LABEL] + [f"G{i}" for i in range(n_pert)]:
            if drop and (p, f"ctx{c}") == drop:
                continue
            mu = base.copy()
            if p != CONTROL_LABEL:
                mu[int(p[1:])] += 1.0 + 0.5 * c
            rows.append(np.clip(mu + rng.normal(0, 0.3, (cells, n_genes)), 0, None))
            obs += [(p, f"ctx{c}", "b0")] * cells
    a = ad.AnnData(sp.csr_matrix(np.vstack(rows).astype(np.float32)),
                   obs=pd.DataFrame(obs, columns=["target_gene", "cell_type", "batch"],
                                    index=[f"c{i}" for i in range(len(obs))]),
                   var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    a.uns["pertpipe"] = {"standardize": {"scale": "log1p"}}
    a.write_h5ad(path)
    return a


def test_zscores_by_hand(tmp_path):
    a = write_contexts(tmp_path / "t.h5ad", n_ctx=2, n_pert=2, n_genes=5, cells=6)
    s = context_stats(tmp_path / "t.h5ad", chunk_size=7)
    X, o = a.X.toarray().astype(np.float64), a.obs
    ctrl = X[((o.target_gene == CONTROL_LABEL) & (o.cell_type == "ctx1")).to_numpy()]
    pert = X[((o.target_gene == "G1") & (o.cell_type == "ctx1")).to_numpy()]
    k = int(np.flatnonzero((s.groups.target_gene == "G1") & (s.groups.cell_type == "ctx1"))[0])
    np.testing.assert_allclose(s.shift[k], pert.mean(0) - ctrl.mean(0), atol=1e-6)
    np.testing.assert_allclose(s.z[k], (pert.mean(0) - ctrl.mean(0)) / np.maximum(ctrl.std(0, ddof=1), 0.05),
                               rtol=1e-5)
    # robust: (median perturbed - median control) / (1.4826 MAD of the controls)
    r = context_stats(tmp_path / "t.h5ad", robust=True)
    mad = 1.4826 * np.median(np.abs(ctrl - np.median(ctrl, 0)), 0)
    np.testing.assert_allclose(r.z[k], (np.median(pert, 0) - np.median(ctrl, 0)) / np.maximum(mad, 0.05), rtol=1e-5)
    s.write(tmp_path / "z.h5ad")
    back = ContextStats.read(tmp_path / "z.h5ad")
    np.testing.assert_allclose(back.z, s.z, rtol=1e-6)
    np.testing.assert_allclose(back.baseline, s.baseline)  # its own statement: `and` never ran it
    assert back.groups.target_gene.tolist() == s.groups.target_gene.tolist() and back.value_kind == "log1p"


def test_context_mean_averages_the_other_contexts(tmp_path):
    write_contexts(tmp_path / "t.h5ad", drop=("G3", "ctx2"))
    m = build_model("context_mean", {})
    m.fit(ModelInputs(tmp_path / "t.h5ad"))
    s = context_stats(tmp_path / "t.h5ad")
    rows = s.shift[((s.groups.target_gene == "G3") & (s.groups.cell_type != "ctx2")).to_numpy()]
    np.testing.assert_allclose(m.predict_shift("G3", "ctx2"), rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(m.predict_shift("NEVER_SEEN", "ctx2"), s.shift.mean(0), rtol=1e-5)


def test_gate_range_and_concat_has_no_gate():
    net = CtxFusionModule(10, 4, 10, d=8, hidden=16, fusion="gated")
    b = {"ctx": torch.randn(5, 4) * 50, "z": torch.randn(5, 3, 10) * 50, "mask": torch.ones(5, 3, dtype=torch.bool),
         "residual": torch.zeros(5, 10), "src": torch.randn(5, 3, 4)}
    out = net(b["ctx"], b["z"], b["mask"], b["residual"], b["src"])
    out = {k: v.detach() for k, v in out.items()}
    assert out["gate"].shape == (5, 8) and float(out["gate"].min()) >= 0 and float(out["gate"].max()) <= 1
    cat = CtxFusionModule(10, 4, 10, d=8, hidden=16, fusion="concat")
    assert "gate" not in cat(b["ctx"], b["z"], b["mask"], b["residual"], b["src"])
    assert not any("gate" in n for n, _ in cat.named_parameters())
    # the decoder starts at zero: an untrained network predicts the residual (context_mean) exactly
    torch.testing.assert_close(out["y"], b["residual"])


def test_unseen_context_gets_predictions_and_reloads(tmp_path):
    write_contexts(tmp_path / "t.h5ad", n_pert=10, drop=None)
    # leave ctx2 out for G0..G4 (its controls stay): the held-out context
    a = ad.read_h5ad(tmp_path / "t.h5ad")
    held = a.obs.target_gene.isin([f"G{i}" for i in range(5)]) & (a.obs.cell_type == "ctx2")
    truth = {t: a[(a.obs.target_gene == t).to_numpy() & (a.obs.cell_type == "ctx2").to_numpy()].X.toarray().mean(0)
             - a[((a.obs.target_gene == CONTROL_LABEL) & (a.obs.cell_type == "ctx2")).to_numpy()].X.toarray().mean(0)
             for t in [f"G{i}" for i in range(5)]}
    a[~held.to_numpy()].copy().write_h5ad(tmp_path / "train.h5ad")
    m = build_model("ctxfusion", {**FAST, "epochs": 40, "steps_per_epoch": 10}, seed=0)
    log = m.fit(ModelInputs(tmp_path / "train.h5ad"))
    assert log["gate"] is not None and 0 < log["gate"]["mean"] < 1 and log["train_examples"] > 0
    pred = {t: m.predict_shift(t, "ctx2") for t in truth}
    assert all(p.shape == (20,) and np.isfinite(p).all() for p in pred.values())
    # a context never seen at all still gets a prediction (its input: the training contexts' mean)
    assert np.isfinite(m.predict_shift("G0", "ctx_new")).all()
    m.save(tmp_path / "m.pt")
    np.testing.assert_allclose(load_model(tmp_path / "m.pt").predict_shift("G1", "ctx2"), pred["G1"], rtol=1e-5)


def test_scgpt_options_need_a_checkpoint():
    from pertpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="scgpt_checkpoint"):
        build_model("ctxfusion", {"signal_encoder": "scgpt_binned_z"})


def test_scgpt_heads_run_on_a_checkpoint_in_scgpts_format(tmp_path):
    from pertpipe.models.scgpt import write_tiny_checkpoint

    write_contexts(tmp_path / "t.h5ad", drop=("G3", "ctx2"))
    write_tiny_checkpoint(tmp_path / "ck", [f"g{i}" for i in range(20)])
    for hp in ({"context_encoder": "scgpt"}, {"signal_encoder": "scgpt_binned_z"}):
        m = build_model("ctxfusion", {**FAST, **hp, "scgpt_checkpoint": str(tmp_path / "ck")})
        m.fit(ModelInputs(tmp_path / "t.h5ad"))
        assert m.ctx_feat.shape[1] == (16 if "context_encoder" in hp else 4) and np.isfinite(
            m.predict_shift("G3", "ctx2")).all()


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    write_contexts(tmp_path / "t.h5ad", n_pert=10)
    hp = {**FAST, "epochs": 12, "steps_per_epoch": 30, "patience": 100}
    ckpt = tmp_path / "ckpt.pt"
    killed = fit_killed_after("ctxfusion", hp, tmp_path / "t.h5ad", tmp_path / "none", ckpt, min_epoch=3)
    assert killed is not None and ckpt.exists()
    torch.set_num_threads(1)
    resumed = build_model("ctxfusion", hp, seed=0)
    log = resumed.fit(ModelInputs(tmp_path / "t.h5ad", checkpoint=ckpt))
    fresh = build_model("ctxfusion", hp, seed=0)
    fresh.fit(ModelInputs(tmp_path / "t.h5ad"))
    assert log["epochs_run"] == 12
    for k, v in fresh.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v)


def test_knowledge_fallback_borrows_the_facet_nearest_perturbations(tmp_path):
    write_contexts(tmp_path / "t.h5ad", n_pert=6)
    genes = [f"G{i}" for i in range(6)] + ["NEW"]
    tensor = torch.zeros(len(genes), 2, 4)
    for i in range(6):
        tensor[i, 0, i % 4] = 1.0  # G0 and G4 share a direction, ...
    tensor[6, 0, 0] = 1.0  # NEW's facet text is like G0's and G4's
    blob = {"genes": genes, "facets": ["f0", "f1"], "tensor": tensor, "mask": torch.tensor([[1.0, 0.0]] * 7)}
    m = build_model("ctxfusion", {**FAST, "knowledge_fallback": True, "fallback_k": 2})
    assert "knowledge" in m.reads() and "knowledge" not in build_model("ctxfusion", FAST).reads()
    m.fit(ModelInputs(tmp_path / "t.h5ad", knowledge=blob))
    pred = m.predict_shift("NEW", "ctx1")
    assert "['G0', 'G4']" in m.notes["NEW"] and np.isfinite(pred).all()
    # the residual of the borrowed signal is the neighbours' mean shift over the other contexts (decoder ~ small)
    near = [m.perts.index("G0"), m.perts.index("G4")]
    other = [c for c in range(3) if c != 1]
    expected = m.shift[np.ix_(near, other)].mean(axis=(0, 1))
    assert np.corrcoef(pred, expected)[0, 1] > 0.9
    plain = build_model("ctxfusion", FAST)
    plain.fit(ModelInputs(tmp_path / "t.h5ad"))
    np.testing.assert_allclose(plain.predict_shift("NEW", "ctx1"), plain.global_shift)
    assert "mean training shift" in plain.notes["NEW"]
    m.save(tmp_path / "m.pt")
    np.testing.assert_allclose(load_model(tmp_path / "m.pt").predict_shift("NEW", "ctx1"), pred, rtol=1e-5)


def test_two_phases_context_head_frozen_then_trained(tmp_path):
    write_contexts(tmp_path / "t.h5ad", n_pert=8)
    hp = {**FAST, "epochs": 3, "patience": 100, "dropout": 0.0}
    frozen = build_model("ctxfusion", {**hp, "freeze_context_epochs": 5}, seed=0)
    log = frozen.fit(ModelInputs(tmp_path / "t.h5ad"))
    torch.manual_seed(0)
    init = CtxFusionModule(len(frozen.genes), frozen.ctx_feat.shape[1], frozen.sig_in.shape[2], d=8, hidden=16,
                           dropout=0.0)
    for (name, a), b in zip(frozen.net.ctx.state_dict().items(), init.ctx.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"ctx.{name} moved while frozen")
    assert log["epochs_run"] == 3
    trained = build_model("ctxfusion", {**hp, "freeze_context_epochs": 1, "context_lr_scale": 0.5}, seed=0)
    trained.fit(ModelInputs(tmp_path / "t.h5ad"))
    moved = [not torch.equal(a, b) for a, b in zip(trained.net.ctx.state_dict().values(), init.ctx.state_dict().values())]
    assert any(moved)
