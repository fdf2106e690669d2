"""A model is one module plus one config entry: discovery by module, typed hyperparameters checked early."""

from __future__ import annotations

import sys

import pytest
from conftest import TOY_MODEL as TOY  # the toy model module, shared with tests/workflow

import pertpipe.models as models_pkg
from pertpipe.errors import ConfigError
from pertpipe.models import MODELS, build_model, get_model_class
from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@pytest.fixture
def toy_module_dir(tmp_path, monkeypatch):
    (tmp_path / "toy_shift.py").write_text(TOY)
    monkeypatch.setattr(models_pkg, "__path__", [*models_pkg.__path__, str(tmp_path)])
    yield tmp_path
    MODELS.pop("toy_shift", None)
    sys.modules.pop("pertpipe.models.toy_shift", None)


def test_a_new_module_is_found_by_name(toy_module_dir):
    assert "toy_shift" not in MODELS
    cls = get_model_class("toy_shift")  # discovered: no import list was edited
    m = build_model("toy_shift", {"size": 2.0, "mode": "down"})
    assert isinstance(m, cls) and m.params.size == 2.0
    m.fit(ModelInputs(None))
    assert list(m.predict_shift("A", "x")) == [-2.0, -2.0]


@pytest.mark.parametrize("hp,msg", [
    ({"size": "big"}, "model_params.toy_shift.size is 'big'. Fix: use a number"),
    ({"size": -1}, "model_params.toy_shift.size is -1. Fix: use a value >= 0"),
    ({"mode": "sideways"}, "model_params.toy_shift.mode is 'sideways'. Fix: use one of ['up', 'down']"),
    ({"repeats": 0}, "model_params.toy_shift.repeats is 0. Fix: use a value >= 1"),
    ({"repeats": True}, "model_params.toy_shift.repeats is True. Fix: use an integer"),
    ({"colour": 1}, "config model_params.toy_shift: unknown hyperparameter(s) ['colour']"),
])
def test_typed_hyperparameters_are_checked(toy_module_dir, hp, msg):
    with pytest.raises(ConfigError) as err:
        build_model("toy_shift", hp)
    assert msg in str(err.value)


@pytest.mark.parametrize("model,hp,field", [
    ("dygenept", {"normaliser": "relu"}, "model_params.dygenept.normaliser"),
    ("dygenept", {"shrinkage": 2}, "model_params.dygenept.shrinkage"),
    ("cfmvc", {"decode": "argmax"}, "model_params.cfmvc.decode"),
    ("cfmvc", {"lr": 0}, "model_params.cfmvc.lr"),
    ("linear", {"rank": 0}, "model_params.linear.rank"),
])
def test_every_model_checks_values_at_build_time(model, hp, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build_model(model, hp)


def test_a_model_whose_declaration_does_not_match_is_refused():
    class NoSignatures(PredictsShift):
        tasks = ("cells", "signatures")

    with pytest.raises(ConfigError, match="declares task 'signatures' but has no predict_signature"):
        register_model("broken_toy")(NoSignatures)

    class UnknownInput(PredictsShift):
        inputs = ("crystal_ball",)

    with pytest.raises(ConfigError, match="unknown input kind"):
        register_model("broken_toy")(UnknownInput)
    assert "broken_toy" not in MODELS


def test_tasks_own_their_splits_and_metrics():
    from pertpipe.tasks import TASKS

    with pytest.raises(ConfigError, match="strategy is 'vcc', but dataset 'lincs' is a signatures task"):
        TASKS["signatures"].check_split("vcc", dataset="lincs")
    TASKS["cells"].check_split("combo", dataset="norman")
    assert [m.name for m in TASKS["spatial"].metrics()] == ["pcc", "ssim", "rmse", "js"]
    assert {m.name for m in TASKS["cells"].metrics()} >= {"DES", "PDS", "MAE"}
    assert TASKS["signatures"].stage3_targets("results", "x") == ["results/x/signature_leaderboard.csv",
                                                                   "results/x/signature_leaderboard.md",
                                                                   "results/x/report.html"]
