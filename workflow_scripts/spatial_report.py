"""Rule spatial_report: the branch's review (JSON + text) and its figures."""
from pertpipe.io import script_step
from pertpipe.spatial.report import spatial_report

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "spatial_report") as log:
    artifacts = {k: str(sm.input[k]) for k in sm.input.keys()}
    rep = spatial_report(sm.wildcards.spatial_dataset, artifacts, n_genes=sm.params.n_genes, out_json=sm.output.json,
                         out_txt=sm.output.txt, out_maps=sm.output.maps, out_metrics=sm.output.metrics, out_html=sm.output.html)
    log.info("report written: %s", sm.output.txt)
