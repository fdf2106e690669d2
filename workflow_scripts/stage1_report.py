"""Rule stage1_report: the review a person reads (JSON + text); fails if a check fails."""
from pertpipe.data.report import render_text, stage1_report
from pertpipe.errors import LeakageError, ContractError
from pertpipe.io import script_step, write_json, write_text

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "stage1_report") as log:
    i = sm.input
    artifacts = {k: str(getattr(i, k)) for k in ("train", "val", "truth", "pseudobulk", "genes", "pert_counts",
                                                 "template", "split")}
    rep = stage1_report(dataset=sm.params.dataset, standardize_json=i.standardize, align_json=i.align,
                        split_json=i.split, train=i.train, val=i.val, truth=i.truth, genes=i.genes,
                        artifacts=artifacts, chunk_size=sm.params.chunk_size)
    if rep["checks"]["leakage"] != "none" or rep["checks"]["train_val_target_overlap"]:
        raise LeakageError(f"{i.split}: {rep['checks']['leakage']}")
    if rep["checks"]["gene_order_match"] != 1.0:
        raise ContractError(i.train, "var_names", "gene order differs from the universe", "re-run align_genes")
    write_json(rep, sm.output.json)
    write_text(render_text(rep), sm.output.txt)
    log.info("checks: %s", rep["checks"])
