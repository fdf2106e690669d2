"""Rule split: train/val by strategy, controls divided, leakage checked; writes train/val h5ad + split.json."""
from pertpipe.core.h5io import read_obs, read_uns
from pertpipe.data.split import (check_no_leakage, heldout_unit, make_split, min_cells_for, read_val_counts, split_summary,
                                 write_split)
from pertpipe.integrity import RECORD_KEY, record
from pertpipe.io import carry_provenance, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "split", job=sm) as log:
    cfg = dict(sm.params.split)
    obs = read_obs(sm.input.h5ad)
    min_cells = min_cells_for(sm.input.h5ad, cfg["min_cells_per_target"])  # signatures: 1
    vc = read_val_counts(sm.input.val_counts) if sm.input.val_counts else None
    result = make_split(obs, strategy=cfg["strategy"], seed=sm.params.seed, fraction=cfg["fraction"],
                        control_val_fraction=cfg["control_val_fraction"], single_fraction=cfg["single_fraction"],
                        combo_fraction=cfg["combo_fraction"], holdout_cell_type=cfg["holdout_cell_type"],
                        val_counts=vc, val_counts_path=str(sm.input.val_counts or ""),
                        min_cells_per_target=min_cells, small_targets=cfg["small_targets"],
                        submission=cfg.get("submission", False))
    check_no_leakage(obs[result.assignment == "train"], obs[result.assignment == "val"],
                     heldout_genes=result.heldout_genes, by_cell_type=cfg["strategy"] == "cell_line_holdout")
    summary = split_summary(obs, result, strategy=cfg["strategy"], seed=sm.params.seed, params=cfg)
    uns = carry_provenance(read_uns(sm.input.h5ad), "split", params={**cfg, "seed": sm.params.seed},
                           split_id=summary["split_id"], heldout_unit=heldout_unit(cfg["strategy"]))
    write_split(sm.input.h5ad, sm.output.train, sm.output.val, result, chunk_size=sm.params.chunk_size,
                uns=uns)
    summary[RECORD_KEY] = record([sm.output.train, sm.output.val], "split")  # consumers verify against it
    write_json(summary, sm.output.split)
    log.info("val perturbations: %d; cells %s", len(result.val_targets), summary["n_cells"])
