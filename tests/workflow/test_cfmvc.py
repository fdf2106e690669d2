"""CFM-VC on the tiny demo (CPU): likelihoods, VAE, flow, ODE solvers, kill-and-resume, unseen targets,
the log1p-only (Gaussian) path, spatial context, and the model through the whole pipeline."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_DEMO, fit_killed_after, predict_reloaded, run_snakemake
from scipy import stats

from pertpipe.core.distances import energy_distance
from pertpipe.errors import ConfigError, ContractError
from pertpipe.io import load_torch
from pertpipe.models import build_model, load_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.modules.cfmvc import Hurdle, NegativeBinomialMu, NormalLogVar
from pertpipe.models.predict import write_predictions

FAST = {"vae_epochs": 12, "flow_epochs": 30, "steps_per_epoch": 20, "hidden": 64, "flow_hidden": 64,
        "groups_per_step": 8, "cells_per_group": 16, "patience": 100, "d_int": 8}


# -- likelihoods (no data needed) --------------------------------------------------------------------------
def test_nb_log_likelihood_matches_scipy_on_hand_values():
    x = torch.tensor([0.0, 1.0, 3.0, 10.0, 0.0, 57.0])
    mu = torch.tensor([0.5, 1.0, 2.5, 8.0, 20.0, 40.0])
    theta = torch.tensor([1.0, 0.3, 5.0, 2.0, 10.0, 100.0])
    ours = NegativeBinomialMu(mu, theta).log_prob(x).double().numpy()
    ref = stats.nbinom.logpmf(x.numpy(), theta.numpy(), (theta / (theta + mu)).numpy())
    assert np.allclose(ours, ref, atol=1e-4)
    assert ours[0] == pytest.approx(np.log((1 / 1.5) ** 1), abs=1e-5)  # NB(0; mu=.5, theta=1) = (θ/(θ+μ))^θ


def test_hurdle_log_likelihood_is_bernoulli_times_gaussian():
    x = torch.tensor([0.0, 0.0, 1.5, 2.0])
    logit = torch.tensor([0.3, -2.0, 0.3, 1.0])
    mean, lv = torch.tensor([1.0, 1.0, 1.2, 2.5]), torch.tensor([0.0, 0.0, -0.5, 0.2])
    ours = Hurdle(logit, mean, lv).log_prob(x).numpy()
    p = 1 / (1 + np.exp(-logit.numpy()))
    ref = np.where(x.numpy() > 0, np.log(p) + stats.norm.logpdf(x.numpy(), mean.numpy(), np.exp(0.5 * lv.numpy())),
                   np.log(1 - p))
    assert np.allclose(ours, ref, atol=1e-5)


def test_gaussian_log_likelihood_matches_scipy():
    x, m, lv = torch.tensor([0.0, 1.2, 3.0]), torch.tensor([0.1, 1.0, 2.0]), torch.tensor([-1.0, 0.0, 0.7])
    ref = stats.norm.logpdf(x.numpy(), m.numpy(), np.exp(0.5 * lv.numpy()))
    assert np.allclose(NormalLogVar(m, lv).log_prob(x).numpy(), ref, atol=1e-5)
    # one parametrisation: torch's own Normal with scale exp(log_var / 2) agrees, and so does the KL to N(0, 1)
    assert np.allclose(torch.distributions.Normal(m, (0.5 * lv).exp()).log_prob(x).numpy(), ref, atol=1e-5)
    std = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
    ours_kl = torch.distributions.kl_divergence(NormalLogVar(m, lv), std)
    ref_kl = torch.distributions.kl.kl_divergence(torch.distributions.Normal(m, (0.5 * lv).exp()), std)
    assert torch.allclose(ours_kl, ref_kl, atol=1e-6)


def test_samples_follow_their_distribution():
    torch.manual_seed(0)
    mu, theta = torch.full((20000,), 4.0), torch.tensor(2.0)
    nb = NegativeBinomialMu(mu, theta).sample()
    assert abs(float(nb.mean()) - 4.0) < 0.1 and abs(float(nb.var()) - (4 + 16 / 2)) < 0.5  # mu + mu^2/theta
    h = Hurdle(torch.full((20000,), 0.0), torch.full((20000,), 2.0), torch.full((20000,), -2.0)).sample()
    assert abs(float((h > 0).float().mean()) - 0.5) < 0.02 and abs(float(h[h > 0].mean()) - 2.0) < 0.05


def test_invalid_settings_are_refused_at_build_time():
    with pytest.raises(ConfigError, match=r"model_params.cfmvc.source is 'noise'.*gaussian"):
        build_model("cfmvc", {"source": "noise"})
    with pytest.raises(ConfigError, match=r"model_params.cfmvc.solver"):
        build_model("cfmvc", {"solver": "rk45"})
    with pytest.raises(ConfigError, match=r"unknown hyperparameter\(s\) \['n_step'\]"):
        build_model("cfmvc", {"n_step": 3})
    with pytest.raises(ConfigError, match=r"generate is 'vae'.*centre is 'none'.*Fix: set centre: auto"):
        build_model("cfmvc", {"generate": "vae", "centre": "none"})


# -- on the tiny demo ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(knowledge_demo):
    return knowledge_demo


@pytest.fixture(scope="module")
def fitted(demo, tmp_path_factory):
    torch.set_num_threads(1)
    m = build_model("cfmvc", FAST, seed=0)
    log = m.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path_factory.mktemp("ck") / "c.pt")))
    return m, log


def _latents(m, path, label, cell_type):
    a = ad.read_h5ad(path)
    a = a[(a.obs.target_gene == label) & (a.obs.cell_type == cell_type)]
    c = a.layers["counts"].toarray()
    return m.encode(np.log1p(c), a.obs.batch.iloc[0], cell_type)[0], a


@pytest.mark.workflow
def test_vae_reconstruction_improves(fitted):
    _m, log = fitted
    vae = log["stage_curves"]["vae"]
    # decode: auto -> sample or paired (validated) when the cells are centred at a baseline's shift (the default),
    # delta for NB otherwise
    assert log["likelihood"] == "nb" and log["decode"] == log["decode_choice"]["chosen"] and log["centre"]["chosen"]
    # held-out cells' NB reconstruction NLL per gene: at least 10% lower after training than after one epoch
    assert min(vae["val"]) <= 0.9 * vae["val"][0] and vae["loss"][-1] < vae["loss"][0]


@pytest.mark.workflow
def test_flow_loss_falls_and_samples_move_toward_the_perturbed_cells(demo, fitted):
    m, log = fitted
    flow = log["stage_curves"]["flow"]["loss"]
    assert flow[-1] <= 0.7 * flow[0]
    tr = ad.read_h5ad(demo["train"])
    counts = tr.obs.groupby(["target_gene", "cell_type"], observed=True).size()
    pairs = [(t, ct) for (t, ct), n in counts.items() if t != "non-targeting" and "+" not in t and n >= 15]
    assert len(pairs) >= 10
    before, after = [], []
    for t, ct in pairs:
        z_pert, a = _latents(m, demo["train"], t, ct)
        z_ctrl, _ = _latents(m, demo["train"], "non-targeting", ct)
        z_gen = m.generate_latent(t, ct, a.obs.batch.iloc[0], z_ctrl, seed=3)
        s = m.z_std  # in the flow's (standardised) latent space
        before.append(float(energy_distance(z_ctrl / s, z_pert / s)))
        after.append(float(energy_distance(z_gen / s, z_pert / s)))
    assert np.mean(after) < 0.6 * np.mean(before), (before, after)


@pytest.mark.workflow
def test_euler_and_midpoint_agree_as_steps_grow(demo, fitted):
    m, _ = fitted
    z_ctrl, _ = _latents(m, demo["train"], "non-targeting", "typeA")
    t = "CCY1"
    ref = m.generate_latent(t, "typeA", "batch1", z_ctrl, n_steps=256, solver="midpoint")
    gaps, euler_err = [], []
    for n in (2, 8, 32):
        e = m.generate_latent(t, "typeA", "batch1", z_ctrl, n_steps=n, solver="euler")
        mp = m.generate_latent(t, "typeA", "batch1", z_ctrl, n_steps=n, solver="midpoint")
        gaps.append(np.abs(e - mp).mean())
        euler_err.append(np.abs(e - ref).mean())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.25 * gaps[0]
    assert euler_err[0] > euler_err[1] > euler_err[2]
    assert np.abs(m.generate_latent(t, "typeA", "batch1", z_ctrl, n_steps=32, solver="midpoint") - ref).mean() < 0.02


@pytest.mark.workflow
def test_predictions_follow_the_contract_and_unseen_targets_differ(demo, fitted, tmp_path):
    m, _ = fitted
    p, tpl = predict_reloaded(m, demo, tmp_path)
    # reproducible: the same model and seed give the same cells
    write_predictions(load_model(tmp_path / "model.pt"), tpl, demo["train"], tmp_path / "pred2.h5ad")
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "pred2.h5ad").X, p.X)
    train_targets = set(ad.read_h5ad(demo["train"], backed="r").obs["target_gene"])
    unseen = [t for t in tpl.target_gene.unique() if t != "non-targeting" and t not in train_targets]
    assert len(unseen) >= 3
    means = {t: np.asarray(p[p.obs.target_gene == t].X.mean(0)).ravel() for t in unseen}
    ctrl = np.asarray(p[p.obs.target_gene == "non-targeting"].X.mean(0)).ravel()
    assert all(np.abs(v - ctrl).mean() > 1e-3 for v in means.values())
    z_ctrl, _ = _latents(m, demo["train"], "non-targeting", "typeA")
    # unseen targets with different facet texts flow to different places (identical texts: identical cells)
    distinct = {}
    for t in unseen:
        distinct.setdefault(m.lookup.target(t)[0].tobytes(), t)
    picked = list(distinct.values())
    assert len(picked) >= 2
    z = [m.generate_latent(t, "typeA", "batch1", z_ctrl, seed=1) for t in picked]
    assert all(not np.allclose(z[i], z[i + 1], atol=1e-3) for i in range(len(z) - 1))


@pytest.mark.workflow
def test_killed_and_resumed_gives_the_same_weights(demo, tmp_path):
    hp = dict(FAST, vae_epochs=4, flow_epochs=6)
    ckpt = tmp_path / "killed.pt"
    # killed once the VAE stage is done and the flow stage has saved two epochs
    killed_at = fit_killed_after("cfmvc", hp, demo["train"], demo["knowledge"], ckpt,
                                 watch=tmp_path / "killed.flow.pt", min_epoch=2)
    assert killed_at is not None and killed_at < 6, "the run was not killed inside the flow stage"
    assert load_torch(tmp_path / "killed.vae.pt")["epoch"] == hp["vae_epochs"]  # VAE stage done
    torch.set_num_threads(1)
    resumed = build_model("cfmvc", hp, seed=0)
    rlog = resumed.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(ckpt)))
    straight = build_model("cfmvc", hp, seed=0)
    slog = straight.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path / "straight.pt")))
    a, b = resumed.net.state_dict(), straight.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rlog["stage_curves"] == slog["stage_curves"]


@pytest.mark.workflow
def test_mmd_term_and_joint_fine_tune(demo, tmp_path):
    torch.set_num_threads(1)
    hp = dict(FAST, vae_epochs=4, flow_epochs=3, joint_epochs=2, mmd_weight=0.1, mmd_steps=2)
    m = build_model("cfmvc", hp, seed=0)
    log = m.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path / "c.pt")))
    assert set(log["stage_curves"]) == {"vae", "flow", "joint"} and len(log["stage_curves"]["joint"]["loss"]) == 2
    assert load_torch(tmp_path / "c.joint.pt")["epoch"] == 2 and log["stages"]["joint"]["cells_per_s"] > 0
    flow_only = build_model("cfmvc", dict(hp, joint_epochs=0), seed=0)
    flow_only.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"]))
    # the joint stage moves the encoder (stage 2 alone never touches the VAE)
    a, b = m.net.vae.state_dict(), flow_only.net.vae.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(log["stage_curves"]["joint"]["loss"]).all()
    flow_parts = log["stage_curves"]["flow"]["parts"]
    assert all(part["mmd"] >= 0 for part in flow_parts) and "mmd" in log["stage_curves"]["joint"]["parts"][0]
    assert "recon_nll_per_gene" in log["stage_curves"]["joint"]["parts"][0]


def _without_counts(src, dest):
    a = ad.read_h5ad(src)
    del a.layers["counts"]
    a.write_h5ad(dest)


@pytest.mark.workflow
@pytest.mark.parametrize("fallback", ["hurdle", "gaussian"])
def test_log1p_only_data_use_a_log1p_likelihood(demo, tmp_path, fallback):
    train = tmp_path / "train_log1p.h5ad"
    _without_counts(demo["train"], train)
    with pytest.raises(ContractError, match=r"layers\['counts'\].*likelihood: auto"):
        build_model("cfmvc", dict(FAST, likelihood="nb")).fit(ModelInputs(train, knowledge=demo["knowledge"]))
    torch.set_num_threads(1)
    hp = dict(FAST, vae_epochs=6, flow_epochs=4) if fallback == "hurdle" else dict(FAST, vae_epochs=6, flow_epochs=4,
                                                                                   log1p_fallback="gaussian")
    m = build_model("cfmvc", hp, seed=0)
    log = m.fit(ModelInputs(train, knowledge=demo["knowledge"]))
    # decode: auto with a centre -> the validated one of sample / paired, for log1p data too
    assert log["likelihood"] == fallback and log["decode"] == log["decode_choice"]["chosen"]
    vae = log["stage_curves"]["vae"]["val"]
    assert min(vae) < 0.9 * vae[0]
    tpl = pd.read_csv(demo["template"])
    write_predictions(m, tpl, train, tmp_path / "pred.h5ad")
    p = ad.read_h5ad(tmp_path / "pred.h5ad")
    assert p.X.min() >= 0 and np.isfinite(p.X).all() and p.n_obs == int(tpl.n_cells.sum())
    pert = p[p.obs.target_gene != "non-targeting"].X
    zeros = float((np.asarray(pert) == 0).mean())
    truth_zeros = 1 - ad.read_h5ad(demo["val"]).X.nnz / np.prod(ad.read_h5ad(demo["val"]).shape)
    if fallback == "hurdle":  # the hurdle keeps sparse data sparse
        assert abs(zeros - truth_zeros) < 0.15, (zeros, truth_zeros)


@pytest.mark.workflow
def test_spatial_coordinates_enter_the_context(demo, tmp_path):
    a = ad.read_h5ad(demo["train"])
    rng = np.random.default_rng(0)
    a.obsm["spatial"] = rng.uniform(0, 100, size=(a.n_obs, 2))
    train = tmp_path / "train_xy.h5ad"
    a.write_h5ad(train)
    torch.set_num_threads(1)
    m = build_model("cfmvc", dict(FAST, vae_epochs=3, flow_epochs=3), seed=0)
    log = m.fit(ModelInputs(train, knowledge=demo["knowledge"]))
    assert log["spatial_dim"] == 2 and m.net.context.spatial is not None
    z_ctrl = rng.normal(size=(6, m.params.d_int))
    near = m.generate_latent("CCY1", "typeA", "batch1", z_ctrl, seed=1, xy=np.full((6, 2), 5.0))
    far = m.generate_latent("CCY1", "typeA", "batch1", z_ctrl, seed=1, xy=np.full((6, 2), 95.0))
    assert not np.allclose(near, far)
    m.save(tmp_path / "m.pt")
    tpl = pd.read_csv(demo["template"])
    write_predictions(load_model(tmp_path / "m.pt"), tpl, train, tmp_path / "pred.h5ad")
    assert ad.read_h5ad(tmp_path / "pred.h5ad").n_obs == int(tpl.n_cells.sum())
    m_off = build_model("cfmvc", dict(FAST, vae_epochs=1, flow_epochs=1, use_spatial=False), seed=0)
    assert m_off.fit(ModelInputs(train, knowledge=demo["knowledge"]))["spatial_dim"] == 0


@pytest.mark.workflow
def test_cfmvc_through_the_pipeline(demo):
    wd = demo["wd"]
    cfg = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
           "knowledge": {"cache_dir": str(wd / "cache")}, "models": ["cell_mean", "cfmvc"],
           "model_params": {"cfmvc": dict(FAST, vae_epochs=4, flow_epochs=4)}}
    run_snakemake(wd, cfg, "all", timeout=1200)
    res = wd / "results/demo"
    log = json.loads((res / "stage2/cfmvc/train_log.json").read_text())
    assert set(log["stage_curves"]) == {"vae", "flow"} and log["cells_per_s"] > 0
    assert not list((res / "stage2/cfmvc").glob("checkpoint*.pt"))  # finished: resume checkpoints removed
    board = pd.read_csv(res / "leaderboard.csv")
    assert set(board.model) == {"cell_mean", "cfmvc", "cfmvc_raw"}  # shrunk: scored raw (λ = 1) too
    row = board.set_index("model").loc["cfmvc"]
    assert np.isfinite(row[["DES", "PDS", "MAE", "avg_score"]].astype(float)).all() and row["MAE"] > 0
    # the generative model's distribution metrics: the energy distance sees spread, finite for every row
    assert np.isfinite(board["energy_distance"].astype(float)).all() and (board["energy_distance"] > 0).all()
    assert board.set_index("model").loc["cfmvc_raw", "lambda"] == 1.0
    html = (res / "report.html").read_text()
    assert "cfmvc" in html and html.count("data:image/png;base64,") >= 3
    # the page says which cells the model makes around its centre, and why (the validated decode choice)
    built = html[html.index("<h2>Built on a baseline</h2>"):html.index("<h2>Training</h2>")]
    dc = log["decode_choice"]
    assert f"{dc['chosen']} (fold-change error on {dc['groups']} validation groups: paired" in built


@pytest.mark.workflow
def test_generated_cells_are_centred_at_the_chosen_baseline(demo, fitted, tmp_path):
    """The flow's cells keep their spread but their pseudobulk is the centre's: drawn controls + its shift."""
    from pertpipe.models.summary import ControlCells

    m, log = fitted
    centre = log["centre"]
    # singles and doubles in training: each kind chosen on its own groups by the validation score
    for ch in (centre.get("by_kind") or {"all": centre}).values():
        scores = {c: sc["score"] for c, sc in ch["crossfit_score"].items()}
        assert scores[ch["chosen"]] == max(scores.values())
    controls = ControlCells.load(demo["train"], counts=True)
    pick = np.flatnonzero((controls.obs.cell_type == "typeA").to_numpy())[:60]
    rng = np.random.default_rng(0)
    cells = m.predict_cells("CCY1", "typeA", "batch1", controls, pick, rng)
    want = controls.x[pick].toarray().mean(0) + m.centre.shift("CCY1", "typeA")
    got = cells.mean(0)
    assert np.corrcoef(got - controls.x[pick].toarray().mean(0), want - controls.x[pick].toarray().mean(0))[0, 1] > 0.9
    assert cells.std(0).mean() > 0.05  # generated cells, not one profile
    # decode auto with a centre: sample or paired, whichever the validation groups' fold changes favour; kept in
    # the model file
    ch = log["decode_choice"]
    assert ch["groups"] >= 1 and set(ch["lfc_mae"]) == set(ch["energy_distance"]) == {"sample", "paired"}
    assert ch["chosen"] == ("paired" if ch["lfc_mae"]["paired"] < ch["lfc_mae"]["sample"] else "sample")
    assert m.decode_mode == ch["chosen"] == log["decode"]
    m.save(tmp_path / "model.pt")
    again = load_model(tmp_path / "model.pt", expected="cfmvc")
    assert again.decode_choice == ch and again.decode_mode == ch["chosen"]
    # decode delta: the centred cells are the drawn controls plus the centre's shift, i.e. that baseline
    m.params.decode = "delta"
    try:
        assert m.equals() == m.centre.display_name
        x = m.predict_cells("CCY1", "typeA", "batch1", controls, pick, rng)
        np.testing.assert_allclose(x, np.clip(controls.x[pick].toarray() + m.centre.shift("CCY1", "typeA"), 0, None))
    finally:
        m.params.decode = "auto"


@pytest.mark.workflow
def test_ablations_without_the_flow_keep_the_centre_and_change_only_the_spread(demo, fitted, tmp_path):
    """generate: vae (the flow off) and none (no network) train less, choose the same centre, put the cells at
    its mean, and draw the spread from the VAE's resampling of the controls or from the controls themselves."""
    from pertpipe.models.summary import ControlCells

    full, full_log = fitted
    controls = ControlCells.load(demo["train"], counts=True)
    pick = np.flatnonzero((controls.obs.cell_type == "typeA").to_numpy())[:60]
    x_ctrl = controls.x[pick].toarray()
    want = np.clip(x_ctrl.mean(0) + full.centre.shift("CCY1", "typeA"), 0, None)
    cells = {}
    for how, stages in (("none", []), ("vae", ["vae"])):
        m = build_model("cfmvc", dict(FAST, generate=how), seed=0)
        log = m.fit(ModelInputs(demo["train"], knowledge=demo["knowledge"], checkpoint=str(tmp_path / f"{how}.pt")))
        assert list(log["stages"]) == stages and log["generate"] == how
        assert log["centre"]["chosen"] == full_log["centre"]["chosen"]  # the same validated centre as the full model
        cells[how] = m.predict_cells("CCY1", "typeA", "batch1", controls, pick, np.random.default_rng(0))
        np.testing.assert_allclose(cells[how].mean(0), want, atol=1e-5)  # the centre's pseudobulk, exactly
        assert (m.equals() == m.centre.display_name) is (how == "none")
    # none: the drawn controls themselves, each gene moved by one offset (clipped at 0)
    moved = cells["none"] - x_ctrl
    nz = (cells["none"] > 0).all(0)
    np.testing.assert_allclose(moved[:, nz], np.broadcast_to(moved[0, nz], moved[:, nz].shape), atol=1e-6)
    # vae: resampled cells, not the controls; the full model's cells differ from both
    flow = full.predict_cells("CCY1", "typeA", "batch1", controls, pick, np.random.default_rng(0))
    assert not np.allclose(cells["vae"], cells["none"], atol=1e-2) and not np.allclose(flow, cells["vae"], atol=1e-2)
    # decode paired: each drawn control cell plus the flow's change for it, at the centre's mean; the change is each
    # cell's own (not one offset per gene, as in none), and it is the decoded difference of OT-assigned latents
    full.params.decode = "paired"
    try:
        paired = full.predict_cells("CCY1", "typeA", "batch1", controls, pick, np.random.default_rng(0))
        assert full.equals() is None
        np.testing.assert_allclose(paired.mean(0), want, atol=1e-5)
        step = paired - cells["none"]
        both = (paired > 0).all(0) & nz
        assert np.abs(step[:, both] - step[:, both].mean(0)).max() > 0.05  # varies by cell
        z_int, z_tech = full.encode(np.log1p(controls.counts[pick].toarray()), "batch1", "typeA")
        change = full._paired_change(z_int, z_int.copy(), z_tech, "batch1")
        np.testing.assert_allclose(change, 0, atol=1e-9)  # a latent assigned to itself changes nothing
        from scipy.optimize import linear_sum_assignment
        z1 = z_int[::-1].copy()  # the assignment undoes a reordering of the generated latents
        assert (linear_sum_assignment(((z_int[:, None] - z1[None]) ** 2).sum(-1))[1] == np.arange(len(z1))[::-1]).all()
        np.testing.assert_allclose(full._paired_change(z_int, z1, z_tech, "batch1"), 0, atol=1e-9)
    finally:
        full.params.decode = "auto"
