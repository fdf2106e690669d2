"""Rule spatial_inputs: read the spatial + scRNA pair (original files) into two h5ad files of raw counts."""
from pertpipe.io import script_step
from pertpipe.spatial.stages import run_inputs

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "spatial_inputs", job=sm) as log:
    e = sm.params.entry
    files = {role: str(sm.input[role]) for role in e.inputs}
    info = run_inputs(e.adapter, files, e.adapter_options, e.species, sm.output.spatial, sm.output.scrna,
                      sm.output.summary, {"name": e.name, "description": e.description, "licence": e.licence,
                                          "citation": e.citation})
    log.info("%s", info)
