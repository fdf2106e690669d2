"""Rule train_<model>: fit one registered model on the training split; model.pt + train_log.json."""
import platform
import time

import os

import torch

from pertpipe.io import package_versions, script_step, write_json
from pertpipe.models import build_model
from pertpipe.models.training import checkpoint_files

sm = snakemake  # noqa: F821
with script_step(sm.log[0], f"train_{sm.params.model}") as log:
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, sm.threads))  # the same arithmetic wherever the rule runs
    model = build_model(sm.params.model, sm.params.hparams, seed=sm.params.seed)
    knowledge = sm.input.knowledge if sm.input.knowledge else None
    fit_log = model.fit(sm.input.train, knowledge, {"chunk_size": sm.params.chunk_size, "threads": sm.threads,
                                                    "checkpoint": sm.params.checkpoint})
    model.save(sm.output.model)
    for ckpt in checkpoint_files(sm.params.checkpoint):  # training finished: resume checkpoints not needed
        os.remove(ckpt)
    train_log = {"model": sm.params.model, "hparams": dict(sm.params.hparams), "seed": sm.params.seed,
                 "wall_s": round(time.perf_counter() - t0, 3), "device": fit_log.pop("device", "cpu"),
                 "host": platform.node(), "versions": package_versions(), **fit_log}
    write_json(train_log, sm.output.log)
    log.info("%s", train_log)
