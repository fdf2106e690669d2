"""Files pertpipe loads with torch are plain data: a pickle payload in any of them is refused and never runs, and a
model saved twice is the same bytes (the archive no longer carries the temporary file's name)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pertpipe.errors import ContractError
from pertpipe.io import load_torch, save_torch


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path, marker, **extra) -> None:
    torch.save({"name": "cell_mean", "payload": _Payload(marker), **extra}, path)


def test_a_pickle_payload_is_refused_by_every_loader(tmp_path):
    from pertpipe.core.training import TrainConfig, train
    from pertpipe.knowledge.encode import load_facet_tensor
    from pertpipe.models import load_model

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _plant(evil, marker, epoch=1)
    module = torch.nn.Linear(2, 1)
    loaders = {
        "model.pt": lambda: load_model(evil),
        "facet tensor / knowledge cache": lambda: load_facet_tensor(evil),
        "training checkpoint": lambda: train(module, param_groups=[{"params": list(module.parameters())}],
                                             step=lambda g, e: (module(torch.ones(1, 2)).sum(), {}, 1), validate=None,
                                             cfg=TrainConfig(epochs=2, steps_per_epoch=1), seed=0, device="cpu",
                                             checkpoint=evil),
    }
    for what, load in loaders.items():
        with pytest.raises(ContractError) as err:
            load()
        msg = str(err.value)
        assert str(evil) in msg and "field 'pickle'" in msg and "posix.system" in msg, what
        assert "re-run the rule" in msg, what
    assert not marker.exists()  # nothing ran


def test_plain_data_round_trips_and_models_save_the_same_bytes(tmp_path):
    from pertpipe.models import build_model

    blob = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "bb"]), "n": np.int64(4),
            "nested": [{"t": torch.ones(2)}, (1.5, "s")], "u": np.array([1, 2], dtype=np.uint16)}
    save_torch(blob, tmp_path / "b.pt")
    back = load_torch(tmp_path / "b.pt")
    np.testing.assert_array_equal(back["x"], blob["x"])
    assert back["x"].dtype == np.float32 and list(back["names"]) == ["a", "bb"] and back["n"] == 4
    assert torch.equal(back["nested"][0]["t"], torch.ones(2)) and back["nested"][1] == (1.5, "s")
    assert back["u"].dtype == np.uint16
    with pytest.raises(TypeError, match=r"b\.pt\['bad'\]: a set cannot be saved as plain data"):
        save_torch({"bad": {1, 2}}, tmp_path / "b.pt")

    m = build_model("cell_mean")
    m.genes, m.shift = ["A", "B"], np.array([0.5, -0.25])
    m.save(tmp_path / "one" / "model.pt")
    m.save(tmp_path / "two" / "model.pt")
    assert (tmp_path / "one/model.pt").read_bytes() == (tmp_path / "two/model.pt").read_bytes()
    from pertpipe.models import load_model

    assert np.array_equal(load_model(tmp_path / "two/model.pt").shift, m.shift)
