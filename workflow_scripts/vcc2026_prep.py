"""Rule vcc2026_prep: one model's predictions as a VCC 2026 submission (counts, no control cells, a context label per
cell type) packaged and checked by vcc-cli's `vcc prep` -> <model>_2026.vcc + prep_2026.json."""
import pandas as pd

from pertpipe.evaluation import vcc2026
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "vcc2026_prep", job=sm) as log:
    info = vcc2026.write_submission(sm.input.predictions, sm.input.train, pd.read_csv(sm.input.template),
                                    dict(sm.params.contexts), sm.output.h5ad, sm.output.perts, seed=sm.params.seed,
                                    chunk_size=sm.params.chunk_size)
    prep = vcc2026.prep_submission(sm.output.h5ad, sm.input.genes, sm.output.perts, info["contexts"], sm.output.vcc,
                                   log_file=sm.log[0])
    write_json({**info, "vcc_prep": prep, "versions": vcc2026.versions()}, sm.output.summary)
    log.info("%s", prep)
