"""Rule stage1_report: the review a person reads (JSON + text); fails if a check fails."""
from pertpipe.data.stage1_review import check_report, render_text, stage1_report
from pertpipe.io import script_step, write_json, write_text

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "stage1_report", job=sm) as log:
    i = sm.input
    artifacts = {k: str(getattr(i, k)) for k in ("train", "val", "truth", "pseudobulk", "genes", "pert_counts",
                                                 "template", "split", "zscores_h5ad")}
    rep = stage1_report(dataset=sm.params.dataset, standardize_json=i.standardize, align_json=i.align,
                        split_json=i.split, train=i.train, val=i.val, truth=i.truth, genes=i.genes,
                        artifacts=artifacts, chunk_size=sm.params.chunk_size, zscores_json=i.zscores)
    check_report(rep, split_path=i.split, train_path=i.train)
    write_json(rep, sm.output.json)
    write_text(render_text(rep), sm.output.txt)
    log.info("checks: %s", rep["checks"])
