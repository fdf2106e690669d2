"""The train_<model> rule's work, in one process or under torchrun (``python -m pertpipe train ...``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from pertpipe.io import write_json


def train_to_files(model_class: str, hparams: dict[str, Any], *, seed: int, train: str, files: dict[str, str],
                   model_out: str, log_out: str, checkpoint: str, chunk_size: int, threads: int,
                   backend: str = "auto") -> dict[str, Any] | None:
    """Fit ``model_class`` on ``train`` (and ``files``: the declared inputs, field -> path) and write ``model.pt`` +
    ``train_log.json`` (rank 0 only under torchrun; every rank trains its share). Resume checkpoints are removed
    once the model is written. Returns the training log on rank 0, None on the other ranks."""
    import torch

    from pertpipe.core import distributed as dist
    from pertpipe.core.training import checkpoint_files
    from pertpipe.models import build_model
    from pertpipe.models.base import train_log_record
    from pertpipe.models.inputs import ModelInputs

    t0 = time.perf_counter()
    state = dist.init_from_env(backend)
    try:
        torch.set_num_threads(max(1, threads // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))
        model = build_model(model_class, hparams, seed=seed)
        inputs = ModelInputs(train, **files, chunk_size=chunk_size, threads=threads, checkpoint=checkpoint)
        fit_log = model.fit(inputs)
        if not dist.is_main():
            dist.barrier()
            return None
        model.save(model_out)
        for ckpt in checkpoint_files(checkpoint):  # training finished: resume checkpoints not needed
            os.remove(ckpt)
        record = train_log_record(model, fit_log, hparams=hparams, wall_s=time.perf_counter() - t0)
        record["distributed"] = {"world_size": state.world, "backend": state.backend}
        write_json(record, log_out)
        dist.barrier()
        return record
    finally:
        dist.shutdown()


def train_args(model_class: str, hparams: dict[str, Any], *, seed: int, train: str, files: dict[str, str],
               model_out: str, log_out: str, checkpoint: str, chunk_size: int, threads: int,
               backend: str = "auto") -> list[str]:
    """The ``python -m pertpipe train`` arguments for :func:`train_to_files` (what torchrun starts)."""
    import json

    args = ["--model-class", model_class, "--hparams", json.dumps(hparams), "--seed", str(seed), "--train", train,
            "--model-out", model_out, "--log-out", log_out, "--checkpoint", checkpoint, "--chunk-size",
            str(chunk_size), "--threads", str(threads), "--backend", backend]
    for name, path in sorted(files.items()):
        args += ["--input", f"{name}={path}"]
    return args


def train_distributed(dist_cfg, log, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`train_to_files` under torchrun (and srun across nodes) as ``dist_cfg`` says; the command and
    every line the processes print go to logger ``log`` (the rule's log). Raises with the last lines when any
    process fails (no output is left behind)."""
    import collections
    import json

    from pertpipe.core.distributed import launch_command, quote
    from pertpipe.errors import PertpipeError
    from pertpipe.io import child_options, explain_exit

    cmd = launch_command(dist_cfg, train_args(backend=dist_cfg.backend, **kwargs))
    log.info("$ %s", quote(cmd))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, kwargs["threads"] // dist_cfg.nproc_per_node))}
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          **child_options()) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip()
            if line:
                tail.append(line)
                log.info("| %s", line)
    if proc.returncode != 0:
        for out in (kwargs["model_out"], kwargs["log_out"]):
            Path(out).unlink(missing_ok=True)
        raise PertpipeError(explain_exit(f"distributed training ({dist_cfg.world_size} processes)", proc.returncode)
                            + "; its last lines:\n" + "\n".join(tail))
    record = json.loads(Path(kwargs["log_out"]).read_text())
    record["distributed"]["launcher"] = quote(cmd)
    write_json(record, kwargs["log_out"])
    return record
