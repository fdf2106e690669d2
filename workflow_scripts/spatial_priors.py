"""Rule spatial_priors: PPI graph Laplacian among the LR genes and the ligand -> target prior."""
from pertpipe.io import script_step
from pertpipe.spatial.stages import run_priors

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "spatial_priors", job=sm) as log:
    pr = sm.params.priors
    nets = {k: str(sm.input[k]) for k in ("lr", "sig", "gr", "dorothea", "matrix") if k in sm.input.keys()}
    info = run_priors(sm.input.lr_genes, sm.input.spatial, ppi=pr["ppi"],
                      ppi_path=str(sm.input.ppi) if "ppi" in sm.input.keys() else None,
                      ppi_min_score=pr["ppi_min_score"], ligand_target=pr["ligand_target"], networks=nets,
                      damping=pr["damping"], max_confidence=pr["max_confidence"], out_npz=sm.output.npz,
                      out_json=sm.output.summary)
    log.info("%s", info)
