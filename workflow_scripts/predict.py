"""Rule predict_<model>: predictions.h5ad on the template, written as the training file's task asks (pertpipe.tasks:
cells, signatures or labels)."""
import pandas as pd

from pertpipe.integrity import RECORD_KEY, record
from pertpipe.io import atomic_path, provenance, read_json, script_step, write_json
from pertpipe.models import load_model
from pertpipe.models.shrinkage import raw_shrinkage_log
from pertpipe.tasks import task_of_file

sm = snakemake  # noqa: F821
with script_step(sm.log[0], f"predict_{sm.params.model}", job=sm) as log:
    model = load_model(sm.input.model, expected=sm.params.model_class)  # another model's file is refused
    shrinkage = model.shrinkage.log() if model.shrinkage is not None else None
    if sm.params.raw:  # `<model>_raw`: the fitted model's own prediction, no shrinkage (λ = 1)
        model.shrinkage, shrinkage = None, raw_shrinkage_log(shrinkage)
    template = pd.read_csv(sm.input.template)
    split = read_json(sm.input.split)
    prov = provenance("predict", params={"model": sm.params.model})
    prov.update(model=sm.params.model, split_id=split["split_id"])
    summary, att = task_of_file(sm.input.train).write_predictions(
        model, template, sm.input.train, sm.output.predictions, seed=sm.params.seed, uns={"pertpipe": prov},
        chunk_size=sm.params.chunk_size)
    with atomic_path(sm.output.attention) as tmp:
        att.to_parquet(tmp, index=False)
    summary["attention_rows"] = int(len(att))
    summary["shrinkage"] = shrinkage
    # a model whose learned part was validated away is its baseline (only where no shrinkage mixes in another)
    summary["equals"] = model.equals() if model.shrinkage is None or model.shrinkage.lam >= 1 else None
    summary[RECORD_KEY] = record([sm.output.predictions], f"predict_{sm.params.model}")
    write_json(summary, sm.output.summary)
    log.info("%s", summary)
