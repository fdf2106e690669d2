"""Rule standardize: source h5ad -> canonical contract (source gene order), chunk by chunk."""
from pertpipe.data.adapters import get_adapter
from pertpipe.data.registry import load_registry
from pertpipe.data.standardize import standardize
from pertpipe.io import provenance, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "standardize", job=sm) as log:
    entry = load_registry(sm.params.registry, sm.params.user_datasets).dataset(sm.params.dataset)
    side = {k: str(sm.input[k]) for k in ("inst_info", "landmarks") if k in sm.input.keys()}
    adapter = get_adapter(entry.adapter, {**entry.adapter_options, **side})  # side files at their local paths
    params = {"adapter": entry.adapter, "adapter_options": entry.adapter_options, "filter": entry.filter,
              "input_scale": sm.params.input_scale, "target_sum": sm.params.target_sum,
              "duplicate_genes": sm.params.duplicate_genes, "duplicate_cells": sm.params.duplicate_cells}
    summary = standardize(sm.input.raw, sm.output.h5ad, adapter=adapter, obs_filter=entry.filter,
                          input_scale=sm.params.input_scale, target_sum=sm.params.target_sum,
                          chunk_size=sm.params.chunk_size, duplicate_genes=sm.params.duplicate_genes,
                          duplicate_cells=sm.params.duplicate_cells,
                          uns={"pertpipe": provenance("standardize", source=entry.provenance(), params=params)})
    summary["dataset"] = entry.name
    write_json(summary, sm.output.summary)
    log.info("%s", summary)
