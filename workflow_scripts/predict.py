"""Rule predict_<model>: predictions.h5ad on the validation template (shift + sampled training controls)."""
import pandas as pd

from pertpipe.data.zscores import value_kind
from pertpipe.io import atomic_path, provenance, read_json, script_step, write_json
from pertpipe.models import load_model
from pertpipe.models.base import attention_table, write_signature_predictions

sm = snakemake  # noqa: F821
with script_step(sm.log[0], f"predict_{sm.params.model}") as log:
    model = load_model(sm.input.model)
    template = pd.read_csv(sm.input.template)
    split = read_json(sm.input.split)
    prov = provenance("predict", params={"model": sm.params.model})
    prov.update(model=sm.params.model, split_id=split["split_id"])
    if value_kind(sm.input.train) == "zscore":  # signature data (L1000): predicted signatures, no cells
        summary = write_signature_predictions(model, template, sm.output.predictions, uns={"pertpipe": prov})
        att = attention_table(model, template.iloc[:0], sm.input.train, seed=sm.params.seed)
    else:
        summary = model.predict(template, sm.input.train, sm.output.predictions, uns={"pertpipe": prov},
                                chunk_size=sm.params.chunk_size)
        att = attention_table(model, template, sm.input.train, seed=sm.params.seed)
    with atomic_path(sm.output.attention) as tmp:
        att.to_parquet(tmp, index=False)
    summary["attention_rows"] = int(len(att))
    write_json(summary, sm.output.summary)
    log.info("%s", summary)
