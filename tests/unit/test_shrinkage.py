"""Validated shrinkage toward the training mean shift (pertpipe.models.shrinkage) on a hand-made case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.errors import ConfigError
from pertpipe.models.shrinkage import Shrinkage, check_setting, choose_shrinkage
from pertpipe.models.summary import ControlCells, TrainingSummary

G = 4


def _summary():
    idx = pd.MultiIndex.from_tuples([("A", "x"), ("B", "x"), ("V", "x")], names=["target_gene", "cell_type"])
    ctrl = pd.DataFrame([[1.0] * G], index=["x"], columns=list("abcd"))
    means = pd.DataFrame([[2.0, 1, 1, 1], [1.0, 2, 1, 1], [1.5, 1.5, 1, 1]], index=idx, columns=list("abcd"))
    return TrainingSummary(list("abcd"), means, pd.Series([10, 10, 10], index=idx), ctrl,
                           pd.Series([50], index=pd.MultiIndex.from_tuples([("x", "b")])), ["x"])


class _Fixed:
    """Predicts control cells + a fixed shift (the 'model' being shrunk)."""

    uses_counts = uses_spatial = False

    def __init__(self, shift):
        self.shift = np.asarray(shift, float)

    def predict_cells(self, t, ct, b, controls, pick, rng):
        return controls.x[pick].toarray() + self.shift


def _controls():
    obs = pd.DataFrame({"target_gene": "non-targeting", "cell_type": ["x"] * 50, "batch": ["b"] * 50})
    return ControlCells(obs, sp.csr_matrix(np.ones((50, G))))


def test_lambda_is_zero_for_a_wrong_model_and_one_for_the_right_one():
    s, c = _summary(), _controls()
    # held-out target V: truth = control + (0.5, 0.5, 0, 0); the anchor (mean of A and B) is exactly that
    wrong = choose_shrinkage(_Fixed([0, 0, 3, -0.5]), s, {"V"}, c, min_groups=1)
    assert wrong.lam == 0.0 and wrong.mae_by_lambda["global:0"] == pytest.approx(0.0)
    assert wrong.anchor_kind == "global" and wrong.how == "validated on 1 held-out training groups"
    assert wrong.log()["equals"] == "cell_mean"  # a λ = 0 row names the baseline it is
    s.target_ct_means.loc[("V", "x")] = [1.0, 1.0, 2.0, 1.0]  # now the model's own change is the truth
    right = choose_shrinkage(_Fixed([0, 0, 1, 0]), s, {"V"}, c, min_groups=1)
    assert right.lam == 1.0 and right.mae_by_lambda["global:1"] == pytest.approx(0.0)
    assert right.log()["equals"] is None
    half = choose_shrinkage(_Fixed([0, 0, 1, 0]), s, {"V"}, c, setting=0.5)
    assert half.lam == 0.5 and half.how == "fixed"
    # the applied anchor includes every training target; apply() mixes and clips
    assert np.allclose(right.anchor["x"], [1 / 3, 1 / 3, 1 / 3, 0])
    x = half.apply(np.array([[2.0, 0, 0, 0]]), np.array([[1.0, 0, 0, 0]]), "x")
    assert np.allclose(x, [[0.5 * (1 + 1 / 3) + 1.0, 1 / 6, 1 / 6, 0]])
    assert np.allclose(half.apply(np.array([[0.0, 0, 0, 0]]), np.array([[0.0, 0, 0, 0]]), "other"),
                       [[1 / 6, 1 / 6, 1 / 6, 0]])  # an unknown cell type takes the overall anchor
    assert choose_shrinkage(_Fixed([0] * G), s, set(), c).how.startswith("raw: 0 held-out")
    # one held-out group is below the default minimum of 8: λ is not validated, the model stays raw and says why
    few = choose_shrinkage(_Fixed([0, 0, 3, -0.5]), s, {"V"}, c)
    assert few.lam == 1.0 and few.groups == 1 and "fewer than the 8" in few.how and few.mae_by_lambda == {}


def test_state_roundtrip_and_setting_check():
    s = Shrinkage(0.25, {"x": np.arange(3.0)}, np.ones(3), {"0": 1.0}, 2)
    t = Shrinkage.from_state(s.state())
    assert t.lam == 0.25 and np.array_equal(t.anchor["x"], np.arange(3.0)) and t.groups == 2
    for ok in ("auto", "none", 0, 0.3, 1):
        check_setting(ok, model="m")
    with pytest.raises(ConfigError, match="model_params.m.shrinkage"):
        check_setting(1.5, model="m")


def test_one_standard_error_rule_by_hand():
    from pertpipe.models.shrinkage import one_se_choice

    # the model (λ=1) is clearly better on the held-out groups: paired gain 0.083 > its SE 0.072
    lam, mean = one_se_choice(np.array([[1.0, 0.9], [1.0, 1.05], [1.0, 0.8]]), (0.0, 1.0))
    assert lam == 1.0 and np.allclose(mean, [1.0, 0.91666667])
    # a gain within one SE of noise goes to the mean shift (λ=0)
    assert one_se_choice(np.array([[1.0, 0.98], [1.0, 1.01], [1.0, 0.99]]), (0.0, 1.0))[0] == 0.0
    # λ is the smallest grid value within one SE of the best, not the best itself
    errs = np.array([[1.0, 0.50, 0.49], [1.0, 0.52, 0.50], [1.0, 0.48, 0.50]])
    assert one_se_choice(errs, (0.0, 0.5, 1.0))[0] == 0.5



def test_per_cell_type_anchor_is_chosen_when_cell_types_differ():
    """Two cell types whose training targets shift opposite genes: only the per-cell-type anchor fits the
    held-out target, and the validation says so; with one cell type the global anchor (cell_mean) is kept."""
    idx = pd.MultiIndex.from_tuples([(t, ct) for t in ("A", "B", "V") for ct in ("x", "y")],
                                    names=["target_gene", "cell_type"])
    up_x, up_y = [2.0, 1, 1, 1], [1.0, 1, 1, 2]
    means = pd.DataFrame([up_x, up_y] * 3, index=idx, columns=list("abcd"))
    ctrl = pd.DataFrame([[1.0] * G] * 2, index=["x", "y"], columns=list("abcd"))
    s = TrainingSummary(list("abcd"), means, pd.Series([10] * 6, index=idx), ctrl,
                        pd.Series(dtype=int), ["x", "y"])
    obs = pd.DataFrame({"target_gene": "non-targeting", "cell_type": ["x"] * 50 + ["y"] * 50, "batch": ["b"] * 100})
    c = ControlCells(obs, sp.csr_matrix(np.ones((100, G))))
    res = choose_shrinkage(_Fixed([0, 0, 0, 0]), s, {"V"}, c, min_groups=2)
    assert res.anchor_kind == "cell_type" and res.lam == 0.0 and res.log()["equals"] == "celltype_mean"
    assert np.allclose(res.anchor["x"], [1, 0, 0, 0]) and np.allclose(res.anchor["y"], [0, 0, 0, 1])
    assert res.mae_by_lambda["cell_type:0"] == pytest.approx(0.0) and res.mae_by_lambda["global:0"] > 0.2


def test_a_fraction_setting_names_its_field_and_the_words_it_takes():
    from pertpipe.errors import ConfigError
    from pertpipe.models import build_model

    with pytest.raises(ConfigError, match=r"model_params.dygenept.residual_scale is 1.5. Fix: use auto or a number"):
        build_model("dygenept", {"residual_scale": 1.5})
    with pytest.raises(ConfigError, match=r"model_params.dygenept.shrinkage is 'x'. Fix: use auto, none or a number"):
        build_model("dygenept", {"shrinkage": "x"})
    build_model("dygenept", {"residual_scale": 0.25, "shrinkage": "none"})
