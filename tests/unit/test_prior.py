"""The facet-kNN knowledge prior (pertpipe.models.prior) on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from pertpipe.models.facet_lookup import FacetLookup
from pertpipe.models.prior import FacetKNNPrior
from pertpipe.models.summary import TrainingSummary


def _lookup():
    # genes A, B, C, NEW with 2 facets x 2 dims; NEW points where A does; NOFACET has no text
    t = np.zeros((5, 2, 2), np.float32)
    t[0, 0] = [1, 0]
    t[1, 0] = [0, 1]
    t[2, 0] = [0.7, 0.7]
    t[3, 0] = [1, 0.05]
    m = np.zeros((5, 2), np.float32)
    m[:4, 0] = 1
    return FacetLookup({g: i for i, g in enumerate(["A", "B", "C", "NEW", "NOFACET"])}, ["f1", "f2"], t, m)


def _summary():
    idx = pd.MultiIndex.from_tuples([("A", "x"), ("B", "x"), ("C", "x"), ("A", "y")], names=["target_gene", "cell_type"])
    ctrl = pd.DataFrame([[0.0, 0.0], [0.0, 0.0]], index=["x", "y"], columns=["g1", "g2"])
    means = pd.DataFrame([[1.0, 0], [0, 1.0], [0.5, 0.5], [3.0, 0]], index=idx, columns=["g1", "g2"])
    return TrainingSummary(["g1", "g2"], means, pd.Series([10, 10, 10, 30], index=idx), ctrl,
                           pd.Series(dtype=int), ["x", "y"])


def test_prior_takes_the_nearest_targets_shift():
    prior = FacetKNNPrior.fit(_summary(), _lookup(), k=1, tau=0.05)
    assert np.allclose(prior.shift("NEW", "x"), [1.0, 0])  # nearest is A, its shift in x
    assert np.allclose(prior.shift("NEW", "y"), [3.0, 0])  # ... and in y
    assert np.allclose(prior.shift("NOFACET", "x"), prior.mean_shift)  # no text: the mean shift
    # leaving (A, x) out: A is still known from y (cell-line holdout); leaving A out entirely: the next nearest
    assert np.allclose(prior.shift("A", "x", leave_out=("A", "x")), [3.0, 0])
    without_a = FacetKNNPrior.fit(_summary(), _lookup(), exclude={"A"}, k=1)
    assert np.allclose(without_a.shift("NEW", "x"), [0.5, 0.5])  # C is nearest once A is gone
    # softmax weights over k neighbours sum to one: the prior lies in their convex hull
    s = FacetKNNPrior.fit(_summary(), _lookup(), k=3, tau=1.0).shift("NEW", "x")
    assert 0 < s[0] < 1 and 0 < s[1] < 1 and np.isclose(s.sum(), 1.0)


def test_prior_state_roundtrip():
    prior = FacetKNNPrior.fit(_summary(), _lookup(), k=2)
    back = FacetKNNPrior.from_state(prior.state(), _lookup())
    for label in ("NEW", "B", "NOFACET"):
        assert np.allclose(back.shift(label, "x"), prior.shift(label, "x"))


# -- the validated baseline prior (cross-fitted choice among the baselines) -------------------------------------------
def _many_targets(n: int = 12, *, text_explains: bool = True):
    """n targets in one cell type over 3 genes; each target's shift is its facet vector mapped linearly (so the
    knowledge ridge should win) or noise unrelated to the text."""
    from pertpipe.models.facet_lookup import FacetLookup

    rng = np.random.default_rng(0)
    genes = [f"T{i}" for i in range(n)] + ["NEW"]
    t = rng.normal(size=(len(genes), 1, 4)).astype(np.float32)
    m = np.ones((len(genes), 1), np.float32)
    lookup = FacetLookup({g: i for i, g in enumerate(genes)}, ["f1"], t, m)
    W = rng.normal(size=(4, 3))
    emb = t[:, 0].astype(np.float64)
    shifts = emb @ W if text_explains else rng.normal(size=(len(genes), 3))
    idx = pd.MultiIndex.from_tuples([(g, "x") for g in genes[:n]], names=["target_gene", "cell_type"])
    ctrl = pd.DataFrame([[1.0, 1.0, 1.0]], index=["x"], columns=["g1", "g2", "g3"])
    means = pd.DataFrame(1.0 + shifts[:n], index=idx, columns=["g1", "g2", "g3"])
    summary = TrainingSummary(["g1", "g2", "g3"], means, pd.Series(10, index=idx), ctrl, pd.Series(dtype=int), ["x"])
    return summary, lookup, shifts


def test_baseline_prior_chooses_by_cross_fitted_error_and_keeps_unseen_like_training_shifts():
    from pertpipe.models.prior import BaselinePrior

    summary, lookup, shifts = _many_targets()
    prior = BaselinePrior.choose(summary, lookup, folds=4, seed=0)
    assert prior.name == "knowledge_ridge"  # the text maps linearly to the shift
    assert prior.errors["knowledge_ridge"] < min(v for k, v in prior.errors.items() if k != "knowledge_ridge")
    # a training group's shift with leave_out is the cross-fitted one (fitted without it), not its own
    own = summary.group_deltas().loc[("T0", "x")].to_numpy()
    assert not np.allclose(prior.shift("T0", "x", leave_out=("T0", "x")), own, atol=1e-6)
    # ... and differs from the all-data fit, which saw it
    assert not np.allclose(prior.shift("T0", "x", leave_out=("T0", "x")), prior.shift("T0", "x"))
    # an unseen target: the ridge fitted on every training group
    assert np.corrcoef(prior.shift("NEW", "x"), shifts[-1])[0, 1] > 0.9
    log = prior.log()
    assert log["chosen"] == "knowledge_ridge" and set(log["crossfit_mse"]) == set(prior.errors)
    assert log["criterion"] == "score" and set(log["crossfit_score"]) == set(prior.errors)
    assert prior.scores["knowledge_ridge"]["score"] == max(sc["score"] for sc in prior.scores.values())
    back = BaselinePrior.from_state(prior.state(), lookup)
    assert back.name == prior.name and np.allclose(back.shift("NEW", "x"), prior.shift("NEW", "x"))
    assert back.criterion == "score" and back.scores == prior.scores
    assert BaselinePrior.choose(summary, lookup, folds=4, seed=0, criterion="mse").scores == {}


def _two_kinds_of_signal(n: int = 30, G: int = 40):
    """Each target's shift is a linear map of its facet vector (what the ridge reads) plus an XOR of two facet
    coordinates' signs (local in facet space: what the kNN reads, not the ridge)."""
    from pertpipe.models.facet_lookup import FacetLookup

    rng = np.random.default_rng(0)
    genes = [f"T{i}" for i in range(n)] + ["NEW"]
    t = rng.normal(size=(len(genes), 1, 4)).astype(np.float32)
    lookup = FacetLookup({g: i for i, g in enumerate(genes)}, ["f1"], t, np.ones((len(genes), 1), np.float32))
    e = t[:, 0].astype(np.float64)
    shifts = e @ rng.normal(size=(4, G)) + 2 * np.sign(e[:, 0] * e[:, 1])[:, None] * rng.normal(size=(1, G))
    cols = [f"g{i}" for i in range(G)]
    idx = pd.MultiIndex.from_tuples([(g, "x") for g in genes[:n]], names=["target_gene", "cell_type"])
    ctrl = pd.DataFrame([[1.0] * G], index=["x"], columns=cols)
    means = pd.DataFrame(1.0 + shifts[:n], index=idx, columns=cols)
    return TrainingSummary(cols, means, pd.Series(10, index=idx), ctrl, pd.Series(dtype=int), ["x"]), lookup


def test_baseline_prior_blends_the_two_best_candidates_when_the_blend_scores_higher():
    from pertpipe.models.prior import BLEND_WEIGHTS, BaselinePrior, _candidate

    summary, lookup = _two_kinds_of_signal()
    cands = ("knowledge_ridge", "knn")
    prior = BaselinePrior.choose(summary, lookup, candidates=cands, folds=4, seed=0)
    assert set(prior.weights) == set(cands) and sum(prior.weights.values()) == pytest.approx(1.0)
    assert min(prior.weights.values()) in BLEND_WEIGHTS  # a share of the grid
    # chosen on the cross-fitted groups: above every single candidate, and the best of the blends
    assert prior.scores[prior.name]["score"] > max(prior.scores[c]["score"] for c in cands)
    assert prior.scores[prior.name]["score"] == max(sc["score"] for sc in prior.scores.values())
    # a training group's cross-fitted shift is the blend of the candidates' cross-fitted shifts
    single = {c: BaselinePrior.choose(summary, lookup, candidates=(c,), folds=4, seed=0) for c in cands}
    g = ("T3", "x")
    assert np.allclose(prior.shift(*g, leave_out=g), sum(w * single[c].shift(*g, leave_out=g)
                                                         for c, w in prior.weights.items()))
    # an unseen target: the blend of the candidates fitted on every training group
    fitted = {}
    for c in cands:
        fitted[c] = _candidate(c, seed=0, k=5, tau=0.05)
        fitted[c].fit_summary(summary, lookup)
    want = sum(w * fitted[c].predict_shift("NEW", "x") for c, w in prior.weights.items())
    assert np.allclose(prior.shift("NEW", "x"), want)
    assert prior.display_name.startswith("blend of ") and "facet kNN prior" in prior.display_name
    assert prior.log()["blend"] == prior.weights
    back = BaselinePrior.from_state(prior.state(), lookup)
    assert back.weights == prior.weights and np.allclose(back.shift("NEW", "x"), want)
    assert prior.best_single in cands and back.best_single == prior.best_single  # what the blend had to beat
    # blend off, or the MSE criterion: one candidate, as before
    assert BaselinePrior.choose(summary, lookup, candidates=cands, folds=4, seed=0, blend=False).weights == {}
    assert BaselinePrior.choose(summary, lookup, candidates=cands, folds=4, seed=0, criterion="mse").weights == {}


def test_baseline_prior_is_chosen_per_kind_when_training_has_singles_and_combinations():
    """Combinations of seen singles are their sum (additive's case); unseen singles follow their text (the ridge's
    and the kNN's): each kind gets its own choice on its own cross-fitted groups."""
    from pertpipe.models.prior import BaselinePrior

    single, lookup = _two_kinds_of_signal()
    deltas = single.group_deltas()
    combos = [(f"T{i}+T{i + 1}", "x") for i in range(0, 16, 2)]
    rows = [deltas.loc[(a, "x")].to_numpy() + deltas.loc[(b, "x")].to_numpy()
            for a, b in (c[0].split("+") for c in combos)]
    idx = single.target_ct_means.index.append(pd.MultiIndex.from_tuples(combos, names=["target_gene", "cell_type"]))
    means = pd.concat([single.target_ct_means, pd.DataFrame(1.0 + np.array(rows), index=idx[-len(combos):],
                                                            columns=single.genes)])
    summary = TrainingSummary(single.genes, means, pd.Series(10, index=idx), single.control_ct_means,
                              pd.Series(dtype=int), ["x"])
    cands = ("knowledge_ridge", "knn", "celltype_mean", "additive")
    prior = BaselinePrior.choose(summary, lookup, candidates=cands, folds=4, seed=0)
    assert set(prior.kinds) == {"single", "combo"}
    assert prior.kinds["combo"].name == "additive"  # the combinations are exactly additive
    assert "additive" not in prior.kinds["single"].parts() and prior.kinds["single"].groups == 30
    for kd, ch in prior.kinds.items():  # each kind's choice is its best on its own groups
        assert ch.scores[ch.name]["score"] == max(sc["score"] for sc in ch.scores.values())
    additive = BaselinePrior.choose(summary, lookup, candidates=("additive",), folds=4, seed=0)
    assert np.allclose(prior.shift("T20+T21", "x"), additive.shift("T20+T21", "x"))
    assert np.allclose(prior.shift("T0+T1", "x", leave_out=("T0+T1", "x")),
                       additive.shift("T0+T1", "x", leave_out=("T0+T1", "x")))
    assert not np.allclose(prior.shift("NEW", "x"), additive.shift("NEW", "x"))
    assert prior.display_name.endswith("additive for combinations")
    assert set(prior.log()["by_kind"]) == {"single", "combo"}
    back = BaselinePrior.from_state(prior.state(), lookup)
    assert back.display_name == prior.display_name
    for label in ("NEW", "T20+T21"):
        assert np.allclose(back.shift(label, "x"), prior.shift(label, "x"))
    assert BaselinePrior.choose(summary, lookup, candidates=cands, folds=4, seed=0, by_kind=False).kinds == {}


def test_baseline_prior_falls_back_to_the_mean_when_text_says_nothing():
    from pertpipe.models.prior import BaselinePrior

    summary, lookup, _ = _many_targets(text_explains=False)
    prior = BaselinePrior.choose(summary, lookup, candidates=("knowledge_ridge", "celltype_mean"), folds=4)
    assert prior.name == "celltype_mean"
    assert prior.errors["celltype_mean"] <= prior.errors["knowledge_ridge"]


def test_fold_unit_follows_the_split(tmp_path):
    from pertpipe.data.split import heldout_unit
    from pertpipe.models.prior import fold_unit

    assert heldout_unit("cell_line_holdout") == "group"
    assert heldout_unit("random_unseen") == heldout_unit("combo") == heldout_unit("vcc") == "target"
    assert fold_unit("group") == "group" and fold_unit("auto") == "target"


def test_summary_without_drops_only_the_named_groups():
    s = _summary()
    w = s.without({("A", "x")})
    assert ("A", "x") not in w.target_ct_means.index and ("A", "y") in w.target_ct_means.index
    assert len(w.target_ct_counts) == 3 and w.control_ct_means.equals(s.control_ct_means)


def test_centred_cells_hit_the_target_mean_without_clipping_bias():
    """CFM-VC's generated cells moved to the centre's pseudobulk: exactly its mean after clipping at 0, also on
    sparse cells where a plain shift would be biased upward, and a zero target gives zeros."""
    from pertpipe.models.cfmvc import centre_cells

    rng = np.random.default_rng(0)
    x = np.where(rng.random((200, 50)) < 0.05, rng.gamma(2, 1, (200, 50)), 0)
    t = np.abs(rng.normal(0.1, 0.05, 50))
    t[0] = 0
    c = centre_cells(x, t)
    assert (c >= 0).all() and np.abs(c.mean(0) - t).max() < 1e-6 and c[:, 0].max() == 0
    naive = np.clip(x - x.mean(0) + t, 0, None)
    assert (naive.mean(0) - t).max() > 0.05  # what the plain shift gets wrong
    dense = rng.normal(3, 0.3, (100, 20))  # nothing reaches 0: the plain shift, exactly
    np.testing.assert_allclose(centre_cells(dense, np.full(20, 2.0)), dense - dense.mean(0) + 2.0, atol=1e-9)


def test_validation_score_is_scaled_like_cell_eval():
    """1 for the truth itself, 0 for the cell-mean baseline (every other group's mean), and it rewards telling
    perturbations apart: a prediction with the right direction but twice the size discriminates perfectly although
    its squared error is larger than that of the mean."""
    from pertpipe.models.prior import validation_score

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(12, 200)) * (rng.random(200) < 0.2)
    cts = np.array(["a"] * 6 + ["b"] * 6)
    assert validation_score(truth, truth, cts) == {"mae": 1.0, "pds": 1.0, "des": 1.0, "score": 1.0}
    base = (truth.sum(0, keepdims=True) - truth) / 11
    assert validation_score(base, truth, cts)["score"] == 0.0
    loud = 2.5 * truth
    assert ((loud - truth) ** 2).mean() > ((base - truth) ** 2).mean()
    sc = validation_score(loud, truth, cts)
    assert sc["pds"] == 1.0 and sc["des"] == 1.0 and sc["mae"] == 0.0
