"""The shared training loop: warm-up reaches the configured learning rate; list parameter groups stay intact."""

from __future__ import annotations

import torch

from pertpipe.core.training import TrainConfig, checkpoint_files, stage_checkpoint, train
from pertpipe.io import load_torch


def test_list_param_groups_reach_the_full_learning_rate_and_resume(tmp_path):
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    groups = [{"params": list(lin.parameters())}]
    seen_lr = []
    x, y = torch.randn(64, 3), torch.randn(64, 1)

    def step(gen, epoch):
        return ((lin(x) - y) ** 2).mean(), {}, 64

    cfg = TrainConfig(epochs=4, steps_per_epoch=2, lr=0.01, warmup_epochs=2, patience=100)
    train(lin, param_groups=groups, step=step, validate=None, cfg=cfg, seed=0, device="cpu",
          checkpoint=tmp_path / "c.pt", on_epoch_start=lambda e: seen_lr.append(e))
    assert groups == [{"params": list(lin.parameters())}]  # the caller's dicts are not written into
    state = load_torch(tmp_path / "c.pt")
    assert state["layout"] == [[2, 0.01]] and state["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert stage_checkpoint(tmp_path / "c.pt", "flow") == tmp_path / "c.flow.pt"
    (tmp_path / "c.flow.pt").write_bytes(b"x")
    assert checkpoint_files(tmp_path / "c.pt") == [tmp_path / "c.flow.pt", tmp_path / "c.pt"]
