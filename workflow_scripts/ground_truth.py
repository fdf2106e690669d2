"""Rule ground_truth: truth h5ad, pseudobulk parquet, gene order and the prediction template."""
import pandas as pd

from pertpipe.data.h5io import read_uns
from pertpipe.data.pseudobulk import write_ground_truth
from pertpipe.io import atomic_path, read_json, script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "ground_truth") as log:
    split = read_json(sm.input.split)
    uns = read_uns(sm.input.val)
    figures = write_ground_truth(sm.input.val, truth_path=sm.output.truth, pseudobulk_path=sm.output.pseudobulk,
                                 genes_path=sm.output.genes, chunk_size=sm.params.chunk_size,
                                 uns={"pertpipe": uns.get("pertpipe", {})})
    template = pd.DataFrame(split["template"], columns=["target_gene", "cell_type", "batch", "n_cells"])
    with atomic_path(sm.output.template) as tmp:
        template.to_csv(tmp, index=False)
    per_target = template.groupby("target_gene", sort=True)["n_cells"].sum().reset_index()
    with atomic_path(sm.output.pert_counts) as tmp:
        per_target.to_csv(tmp, index=False)
    log.info("%s", figures)
