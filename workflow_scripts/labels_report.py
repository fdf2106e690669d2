"""Rule labels_report: stage 1 of a labels dataset in one JSON and one text page (files, licence, alignment, split)."""
from pertpipe.data.labels import labels_report_text
from pertpipe.io import atomic_path, read_json, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "labels_report", job=sm) as log:
    rep = {"dataset": sm.wildcards.dataset, "standardize": read_json(sm.input.standardize),
           "split": {k: v for k, v in read_json(sm.input.split).items() if k != "outputs_sha256"}}
    write_json(rep, sm.output.json)
    with atomic_path(sm.output.txt) as tmp:
        tmp.write_text(labels_report_text(rep))
    log.info("%s", rep["split"])
