"""Rule labels_split: train / test rows of a labels dataset (given, random_unseen, cell_line_holdout) ->
labels_train.h5ad, labels_test.h5ad (the truth), labels_template.csv (the rows to predict), labels_split.json."""
import anndata as ad
import pandas as pd

from pertpipe.data.labels import split_labels, write_labels
from pertpipe.integrity import RECORD_KEY, record
from pertpipe.io import atomic_path, config_hash, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "labels_split", job=sm) as log:
    cfg = dict(sm.params.split)
    adata = ad.read_h5ad(sm.input.h5ad)
    split, summary = split_labels(adata.obs, strategy=cfg["strategy"], seed=sm.params.seed, fraction=cfg["fraction"],
                                  holdout=cfg.get("holdout_cell_type"), holdout_train=cfg.get("holdout_train", True))
    write_labels(adata[split == "train"].copy(), sm.output.train)
    test = adata[split == "test"].copy()
    write_labels(test, sm.output.test)
    template = pd.DataFrame({"row": test.obs_names, "target_gene": test.obs["target_gene"].astype(str),
                             "cell_type": test.obs["cell_type"].astype(str)})
    with atomic_path(sm.output.template) as tmp:
        template.to_csv(tmp, index=False)
    summary["split_id"] = config_hash({"strategy": cfg["strategy"], "seed": sm.params.seed,
                                       "test": sorted(test.obs_names)})
    summary[RECORD_KEY] = record([sm.output.train, sm.output.test], "labels_split")
    write_json(summary, sm.output.split)
    log.info("%s", {k: v for k, v in summary.items() if k != RECORD_KEY})
