"""Rule train_<model>: fit one registered model on the training split; model.pt + train_log.json.
With `distributed.enabled`, for a model that supports it (and is in `distributed.models` where that names any),
the fit runs under torchrun."""
from pertpipe.integrity import RECORD_KEY, record
from pertpipe.io import read_json, script_step, write_json
from pertpipe.models.inputs import file_fields
from pertpipe.core.distributed import DistConfig
from pertpipe.models import get_model_class
from pertpipe.models.run import train_distributed, train_to_files

sm = snakemake  # noqa: F821
resume = (f"the checkpoint {sm.params.checkpoint} (the last finished epoch) is kept; re-running the same snakemake "
          "command resumes training from it and ends with the same weights")
with script_step(sm.log[0], f"train_{sm.params.model}", job=sm, resume=resume) as log:
    files = {k: str(sm.input[k]) for k in file_fields() if k in sm.input.keys()}  # the declared inputs (models.smk)
    job = dict(seed=sm.params.seed, train=sm.input.train, files=files, model_out=sm.output.model,
               log_out=sm.output.log, checkpoint=sm.params.checkpoint, chunk_size=sm.params.chunk_size,
               threads=sm.threads)
    dist = DistConfig.from_config(sm.params.distributed)
    if dist.applies_to(get_model_class(sm.params.model_class)):
        log.info("data-parallel: %d node(s) x %d process(es)", dist.nnodes, dist.nproc_per_node)
        train_log = train_distributed(dist, log, model_class=sm.params.model_class,
                                      hparams=sm.params.hparams, **job)
    else:
        train_log = train_to_files(sm.params.model_class, sm.params.hparams, **job)
    train_log = {**read_json(sm.output.log), RECORD_KEY: record([sm.output.model], f"train_{sm.params.model}")}
    write_json(train_log, sm.output.log)  # predict verifies model.pt against it
    log.info("%s", train_log)
