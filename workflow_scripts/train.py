"""Rule train_<model>: fit one registered model on the training split; model.pt + train_log.json."""
import os
import time

import torch

from pertpipe.io import script_step, write_json
from pertpipe.models import build_model
from pertpipe.models.base import train_log_record
from pertpipe.models.training import checkpoint_files

sm = snakemake  # noqa: F821
with script_step(sm.log[0], f"train_{sm.params.model}") as log:
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, sm.threads))  # the same arithmetic wherever the rule runs
    model = build_model(sm.params.model_class, sm.params.hparams, seed=sm.params.seed)
    knowledge = sm.input.knowledge if sm.input.knowledge else None
    fit_log = model.fit(sm.input.train, knowledge, {"chunk_size": sm.params.chunk_size, "threads": sm.threads,
                                                    "checkpoint": sm.params.checkpoint,
                                                    "zscores": sm.input.zscores or None})
    model.save(sm.output.model)
    for ckpt in checkpoint_files(sm.params.checkpoint):  # training finished: resume checkpoints not needed
        os.remove(ckpt)
    train_log = train_log_record(model, fit_log, hparams=sm.params.hparams, wall_s=time.perf_counter() - t0)
    write_json(train_log, sm.output.log)
    log.info("%s", train_log)
