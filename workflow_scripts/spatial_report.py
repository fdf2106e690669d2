"""Rule spatial_report: the branch's review (JSON + text), its figures, and the run's page results/{dataset}/report.html."""
from pertpipe.io import script_step
from pertpipe.spatial.report import spatial_report
from pertpipe.tasks import TASKS

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "spatial_report", job=sm) as log:
    artifacts = {k: str(sm.input[k]) for k in sm.input.keys()}
    spatial_report(sm.wildcards.spatial_dataset, artifacts, n_genes=sm.params.n_genes, out_json=sm.output.json,
                   out_txt=sm.output.txt, out_maps=sm.output.maps, out_metrics=sm.output.metrics)
    TASKS["spatial"].write_report(dataset=sm.wildcards.spatial_dataset, inputs={"review": sm.output.json}, models=[],
                                  out_html=sm.output.html)
    log.info("report written: %s", sm.output.html)
