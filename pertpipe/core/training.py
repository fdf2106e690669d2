"""The shared training loop of the deep models (DyGenePT, CFM-VC).

* AdamW with linear warm-up, optional parameter groups (e.g. a querier at a smaller learning rate);
* early stopping on a validation score computed by the model (held-out training targets);
* every random draw of epoch ``e`` comes from a generator seeded with ``(seed, e)``, so a run killed after a
  checkpoint and resumed gives the same weights as one that never stopped;
* checkpoints (model, optimiser, scheduler, history, best state) every ``checkpoint_every`` epochs, written
  atomically; :func:`train` resumes from the checkpoint it is given when that file exists (the rule keeps it
  beside ``model.pt`` until training has finished, so a killed ``train_<model>`` job run again resumes; a model's
  data preparation before the loop runs again, deterministically, from the seed);
* AMP (bfloat16 autocast) on CUDA, a progress bar, and a log with loss curves, wall time, device and
  throughput (cells/s);
* data-parallel under ``torchrun`` (:mod:`pertpipe.core.distributed`): the module is wrapped in
  DistributedDataParallel, each process computes its share of every batch (the model's ``step`` asks for it with
  ``distributed.shard``), the logged loss is the whole batch's, and rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 30
    steps_per_epoch: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    patience: int = 8
    checkpoint_every: int = 1
    amp: bool = True
    grad_clip: float = 1.0
    restore_best: bool = True  # end on the best epoch's weights (False: the last epoch's, e.g. the spatial fits)

    @classmethod
    def from_params(cls, params: Any) -> TrainConfig:
        """The training settings a model's hyperparameters carry (fields of the same name), defaults for the rest."""
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls) if hasattr(params, f.name)})


def stage_checkpoint(checkpoint: str | os.PathLike | None, stage: str) -> Path | None:
    """The checkpoint of one training stage of a multi-stage model: ``checkpoint.pt`` -> ``checkpoint.<stage>.pt``."""
    if not checkpoint:
        return None
    base = Path(checkpoint)
    return base.with_name(f"{base.stem}.{stage}{base.suffix}")


def checkpoint_files(checkpoint: str | os.PathLike) -> list[Path]:
    """The resume checkpoint and every stage checkpoint next to it (removed once training has finished)."""
    base = Path(checkpoint)
    return sorted(p for p in [base, *base.parent.glob(f"{base.stem}.*{base.suffix}")] if p.exists())


def validation_targets(targets: list[str], fraction: float, rng: np.random.Generator, *, model: str,
                       path: str | os.PathLike) -> set[str]:
    """Training targets held out for early stopping (``fraction`` of them, none below 5 targets)."""
    from pertpipe.errors import ContractError

    if len(targets) < 2:
        raise ContractError(path, "obs['target_gene']", f"only {len(targets)} trainable perturbation(s)",
                            f"{model} needs several perturbations with >= 3 cells each")
    n_val = max(1, int(round(fraction * len(targets)))) if len(targets) >= 5 else 0
    return set(rng.choice(targets, size=n_val, replace=False).tolist()) if n_val else set()


def epoch_generator(seed: int, epoch: int, device: str = "cpu"):
    """The random generator of one epoch: a function of (seed, epoch) only."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return g


def train(module, *, param_groups: Callable[[int], list[dict[str, Any]]] | list[dict[str, Any]],
          step: Callable[[Any, int], tuple[Any, dict[str, float], int]],
          validate: Callable[[], float] | None, cfg: TrainConfig, seed: int, device: str,
          checkpoint: str | os.PathLike | None = None, on_epoch_start: Callable[[int], None] | None = None,
          desc: str = "training", extra_state: tuple[Callable[[], Any], Callable[[Any], None]] | None = None
          ) -> dict[str, Any]:
    """Train ``module``; returns the log. ``step(generator, epoch) -> (loss, parts, n_cells)``.

    ``extra_state`` = (get, set): state the caller's step owns beyond the module and optimiser (e.g. a random
    generator that runs across epochs), saved in every checkpoint and restored on resume. ``cfg.patience`` 0 turns
    early stopping off.

    ``param_groups`` may be a function of the epoch (a new optimiser group layout starts a new phase, e.g. the
    unfrozen querier); the optimiser is rebuilt when the layout changes and its state restored on resume.
    ``validate()`` returns a score to minimise (early stopping keeps the best state).
    """
    import torch
    from tqdm import tqdm

    from pertpipe.core import distributed as dist

    ckpt = Path(checkpoint) if checkpoint else None
    # fresh dicts per call: torch writes its defaults (and the warm-up's lr) into the groups it is given
    groups_fn = ((lambda e: [dict(g) for g in param_groups(e)]) if callable(param_groups)
                 else (lambda _e: [dict(g) for g in param_groups]))
    history: dict[str, list] = {"loss": [], "val": [], "parts": []}
    start_epoch, best, best_state, bad, layout = 0, float("inf"), None, 0, None
    opt = None
    wall_before = 0.0
    cells_seen = 0

    def make_opt(epoch: int):
        groups = groups_fn(epoch)
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay), tuple(
            (len(g["params"]), g.get("lr", cfg.lr)) for g in groups)

    if ckpt and ckpt.exists():
        (start_epoch, history, best, bad, best_state, wall_before, cells_seen), opt, layout = _resume(
            ckpt, module, make_opt, device, extra_state)
    use_amp = cfg.amp and str(device).startswith("cuda")
    t0 = time.perf_counter()
    stopped_early = False
    ddp, ddp_layout = None, None
    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, mininterval=5, initial=start_epoch, total=cfg.epochs,
               disable=not dist.is_main())
    for epoch in bar:
        if cfg.patience and bad >= cfg.patience:
            stopped_early = True
            break
        if on_epoch_start:
            on_epoch_start(epoch)
        new_opt, new_layout = make_opt(epoch)
        if opt is None or new_layout != layout:
            opt, layout = new_opt, new_layout
        if dist.is_active() and new_layout != ddp_layout:  # (re)wrap: DDP tracks the parameters that train now
            ddp, ddp_layout = _wrap_ddp(module, step, device), new_layout
        warm = min(1.0, (epoch + 1) / max(1, cfg.warmup_epochs))
        base = [g.get("lr", cfg.lr) for g in groups_fn(epoch)]
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * warm
        module.train()
        losses, parts_acc, cells = _run_epoch(module, opt, (lambda g, e: ddp(g, e)) if ddp is not None else step,
                                              epoch_generator(seed, epoch), epoch, cfg, use_amp)
        cells_seen += cells
        history["loss"].append(float(np.mean(losses)))
        history["parts"].append(parts_acc)
        module.eval()
        val = float(validate()) if validate else history["loss"][-1]
        val = dist.all_mean([val])[0]  # the same on every process (same weights); averaged to be sure
        history["val"].append(val)
        if val < best - 1e-9:
            best, bad = val, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}", val=f"{val:.4f}", refresh=False)
        if ckpt and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs) and dist.is_main():
            _save_checkpoint(ckpt, {"module": module.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                    "history": history, "best": best, "bad": bad, "best_state": best_state,
                                    "layout": list(map(list, layout)), "cells_seen": cells_seen,
                                    "wall_s": wall_before + time.perf_counter() - t0,
                                    "extra": extra_state[0]() if extra_state else None})
    dist.barrier()  # every process past the last checkpoint before any goes on
    if best_state is not None and cfg.restore_best:
        module.load_state_dict(best_state)
    wall = wall_before + time.perf_counter() - t0
    return {"loss_curve": history["loss"], "val_curve": history["val"], "loss_parts": history["parts"],
            "epochs_run": len(history["loss"]), "best_val": best, "stopped_early": stopped_early,
            "train_wall_s": round(wall, 3), "cells_seen": cells_seen,
            "cells_per_s": round(cells_seen / wall, 1) if wall > 0 else None, "device": device,
            "world_size": dist.world_size(), "train_config": asdict(cfg)}


def _run_epoch(module, opt, step: Callable, gen, epoch: int, cfg: TrainConfig, use_amp: bool
               ) -> tuple[list[float], dict[str, float], int]:
    """One epoch's ``cfg.steps_per_epoch`` optimiser steps: (the whole batch's loss per step, the loss parts averaged
    over the epoch, cells seen by all processes)."""
    import torch

    from pertpipe.core import distributed as dist

    losses, parts_acc, cells = [], {}, 0
    for _ in range(cfg.steps_per_epoch):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss, parts, n = step(gen, epoch)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        opt.step()
        keys = sorted(parts)
        # each process returns its share's loss x weight: their mean is the whole batch's loss
        vals = dist.all_mean([float(loss.detach()), float(n), *[float(parts[k]) for k in keys]])
        losses.append(vals[0])
        cells += int(round(vals[1] * dist.world_size()))
        for k, v in zip(keys, vals[2:]):
            parts_acc[k] = parts_acc.get(k, 0.0) + float(v) / cfg.steps_per_epoch
    return losses, parts_acc, cells


def _resume(ckpt: Path, module, make_opt: Callable, device: str, extra_state=None):
    """Restore module, optimiser (when its group layout is the same), the caller's extra state and the loop state
    from checkpoint ``ckpt``."""

    from pertpipe.io import load_torch

    state = load_torch(ckpt, map_location=device)
    module.load_state_dict(state["module"])
    if extra_state and state.get("extra") is not None:
        extra_state[1](state["extra"])
    start_epoch = state["epoch"]
    opt, layout = make_opt(start_epoch)
    if state.get("layout") == list(map(list, layout)):
        opt.load_state_dict(state["optimizer"])
    log.info("resumed from %s at epoch %d", ckpt, start_epoch)
    loop = (start_epoch, state["history"], state["best"], state["bad"], state["best_state"],
            state.get("wall_s", 0.0), state.get("cells_seen", 0))
    return loop, opt, layout


def _save_checkpoint(ckpt: Path, state: dict[str, Any]) -> None:
    from pertpipe.io import save_torch

    save_torch(state, ckpt)


def _wrap_ddp(module, step, device):
    """DistributedDataParallel over a module whose forward is one training step (the model's sampling and loss),
    so DDP's gradient hooks see every parameter the step uses."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class _Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, gen, epoch):
            return step(gen, epoch)

    ids = [torch.device(device).index] if str(device).startswith("cuda") else None
    return DistributedDataParallel(_Step(), device_ids=ids, find_unused_parameters=True)
