"""Rule facet_embeddings: embed every facet text once -> facet_embeddings.pt {genes, facets, tensor, mask, ...}."""
import pandas as pd
import torch

from pertpipe.data.genes import load_universe
from pertpipe.io import script_step, write_json
from pertpipe.knowledge.encode import TextEncoder, facet_tensor, save_tensor
from pertpipe.knowledge.facets import load_facets

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "facet_embeddings", job=sm) as log:
    torch.set_num_threads(max(1, sm.threads))
    encoder = TextEncoder(sm.params.text_encoder, device=sm.params.device, max_length=sm.params.max_length)
    facets = [f.name for f in load_facets(sm.input.facet_list)]
    blob = facet_tensor(pd.read_parquet(sm.input.facets), load_universe(sm.input.genes), facets, encoder,
                        batch_size=sm.params.batch_size, cache_dir=sm.params.cache_dir)
    save_tensor(blob, sm.output.tensor)
    fig = {**blob["figures"], "shape": list(blob["tensor"].shape), "encoder": blob["encoder"]}
    write_json(fig, sm.output.summary)
    log.info("%s", fig)
