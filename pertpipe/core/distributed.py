"""Data-parallel training of the deep models with ``torch.distributed`` (DistributedDataParallel).

One process per GPU (or, on CPU, per ``nproc_per_node``), launched by ``torchrun``; NCCL on GPUs, gloo on CPU.
Each training step every process draws the *same* batch indices from the epoch's generator (seeded by
(seed, epoch) as in single-process training), keeps its contiguous share (:func:`shard`) and scales its loss so
that DDP's gradient average is the gradient of the whole batch's mean loss: the effective batch is the
configured one, whatever the number of processes. Rank 0 writes checkpoints and outputs; every rank resumes from
the same checkpoint.

Config (``distributed:``)::

    distributed:
      enabled: false        # true: train_<model> rules of `models` run under torchrun
      models: [dygenept, cfmvc]
      nproc_per_node: 1     # processes per node (one per GPU)
      nnodes: 1             # > 1: SLURM allocates the nodes and `srun` starts one torchrun per node
      backend: auto         # auto: nccl on CUDA, gloo on CPU
      port: 29500           # rendezvous port on the first node

The rule stays the same (``train_<model>``); its script starts ``torchrun ... -m pertpipe train ...``
(:func:`launch_command`) instead of fitting in-process, and under SLURM with several nodes prefixes ``srun``.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe.errors import ConfigError


@dataclass(frozen=True)
class DistConfig:
    """The ``distributed:`` config block."""

    enabled: bool = False
    models: tuple[str, ...] = ()  # () = every configured model that supports it (``supports_ddp``)
    nproc_per_node: int = 1
    nnodes: int = 1
    backend: str = "auto"
    port: int = 29500

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> DistConfig:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ConfigError(f"config distributed: unknown key(s) {unknown}. Fix: use enabled, models, "
                              "nproc_per_node, nnodes, backend, port")
        if "models" in cfg:
            cfg["models"] = tuple(cfg["models"])  # which can train data-parallel is the models' own word (the run plan)
        for key in ("nproc_per_node", "nnodes"):
            if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 1):
                raise ConfigError(f"config distributed.{key} is {cfg[key]!r}. Fix: a whole number >= 1")
        if cfg.get("backend", "auto") not in ("auto", "nccl", "gloo"):
            raise ConfigError(f"config distributed.backend is {cfg['backend']!r}. Fix: use auto, nccl or gloo")
        return cls(**cfg)

    def applies_to(self, model_class: type) -> bool:
        """Whether ``model_class`` (a registered model) trains data-parallel: enabled, the model's training loop shards
        its batches (``supports_ddp``) and ``models`` names it (or names none)."""
        return (self.enabled and bool(getattr(model_class, "supports_ddp", False))
                and (not self.models or model_class.name in self.models))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# -- the running process group ----------------------------------------------------------------------------------
@dataclass
class _State:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_STATE = _State()


def rank() -> int:
    return _STATE.rank


def world_size() -> int:
    return _STATE.world


def is_active() -> bool:
    return _STATE.world > 1


def is_main() -> bool:
    return _STATE.rank == 0


def init_from_env(backend: str = "auto") -> _State:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``);
    a no-op for a single process. Returns the state (rank, world size, backend)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _STATE
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _STATE.rank, _STATE.world, _STATE.local_rank, _STATE.backend = dist.get_rank(), dist.get_world_size(), local, backend
    return _STATE


def shutdown() -> None:
    if _STATE.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _STATE.rank, _STATE.world, _STATE.local_rank, _STATE.backend = 0, 1, 0, None


def device_for(device: str) -> str:
    """``cuda`` -> this process's GPU (``cuda:<local rank>``) under DDP; anything else unchanged."""
    return f"cuda:{_STATE.local_rank}" if device == "cuda" and is_active() else device


def shard(n: int) -> tuple[int, int, float]:
    """This process's contiguous share ``[lo, hi)`` of a batch of ``n`` items and the weight of its loss
    (``world x share / n``), so that DDP's gradient average equals the whole batch's mean-loss gradient."""
    if not is_active():
        return 0, n, 1.0
    bounds = np.linspace(0, n, _STATE.world + 1).round().astype(int)
    lo, hi = int(bounds[_STATE.rank]), int(bounds[_STATE.rank + 1])
    return lo, hi, _STATE.world * (hi - lo) / max(1, n)


@dataclass(frozen=True)
class Share:
    """Items ``lo..hi-1`` of a batch of ``n``: random numbers are drawn for the whole batch, in the order one
    process draws them, and cut to the share, so every process's draws match single-process training."""

    lo: int
    hi: int
    n: int

    @classmethod
    def of(cls, n: int) -> Share:
        lo, hi, _w = shard(n)
        return cls(lo, hi, n)

    @classmethod
    def whole(cls, n: int) -> Share:
        return cls(0, n, n)

    def scaled(self, k: int) -> Share:
        """The same share of a batch whose items are each ``k`` rows (groups of k cells)."""
        return Share(self.lo * k, self.hi * k, self.n * k)

    def rand(self, gen, *tail: int):
        import torch

        return torch.rand((self.n, *tail), generator=gen)[self.lo:self.hi]

    def randn(self, gen, *tail: int):
        import torch

        return torch.randn((self.n, *tail), generator=gen)[self.lo:self.hi]


def all_mean(values: list[float]) -> list[float]:
    """The mean over processes of each value (the logged loss of the whole batch)."""
    if not is_active():
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if _STATE.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / _STATE.world).cpu().tolist()


def barrier() -> None:
    if is_active():
        import torch.distributed as dist

        dist.barrier()


# -- launching --------------------------------------------------------------------------------------------------
def launch_command(dist_cfg: DistConfig, train_args: list[str], *, env: dict[str, str] | None = None) -> list[str]:
    """The command that runs ``python -m pertpipe train <train_args>`` under torchrun.

    One node: ``torchrun --standalone --nproc_per_node N``. Several nodes (inside a SLURM allocation): ``srun``
    starts one torchrun per node, which meet at the first node of the allocation (c10d rendezvous)."""
    env = dict(os.environ if env is None else env)
    run = [sys.executable, "-m", "torch.distributed.run"]
    entry = ["-m", "pertpipe", "train", *train_args]
    if dist_cfg.nnodes == 1:
        return [*run, "--standalone", f"--nproc_per_node={dist_cfg.nproc_per_node}", *entry]
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodes:
        raise ConfigError(f"config distributed.nnodes is {dist_cfg.nnodes} but this job is not in a SLURM allocation "
                          "(no SLURM_JOB_NODELIST). Fix: run with the SLURM profile (--profile profiles/slurm), "
                          "which requests the nodes, or set nnodes: 1")
    head = first_host(nodes)
    return ["srun", f"--nodes={dist_cfg.nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *run,
            f"--nnodes={dist_cfg.nnodes}", f"--nproc_per_node={dist_cfg.nproc_per_node}",
            "--rdzv_backend=c10d", f"--rdzv_endpoint={head}:{dist_cfg.port}",
            f"--rdzv_id={env.get('SLURM_JOB_ID', 'pertpipe')}", *entry]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[03-05,09],gpu1`` -> ``node03``)."""
    first = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist[: nodelist.index("]") + 1]
    if "[" not in first:
        return first
    prefix, rng = first.split("[", 1)
    return prefix + rng.rstrip("]").split(",")[0].split("-")[0]


def quote(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
