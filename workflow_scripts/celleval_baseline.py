"""Rule celleval_baseline: the cell-mean baseline (the cell_mean model's predictions, same seed and control draws as
its predict rule), then cell-eval run on it (or the local engine above a size, config evaluation.run_engine)."""
import shutil
from pathlib import Path

import pandas as pd

from pertpipe.core.h5io import read_uns
from pertpipe.evaluation import celleval
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "celleval_baseline", job=sm) as log:
    split_id = read_uns(sm.input.truth).get("pertpipe", {}).get("split_id")
    info = celleval.build_baseline(sm.input.train, pd.read_csv(sm.input.template), sm.output.baseline,
                                   seed=sm.params.seed, chunk_size=sm.params.chunk_size,
                                   uns={"pertpipe": {"model": "celleval_baseline", "split_id": split_id}})
    log.info("%s", info)
    out = Path(sm.output.agg).parent
    run = celleval.run(sm.output.baseline, sm.input.truth, out / "run", profile=sm.params.profile,
                       threads=sm.threads, log_file=sm.log[0], engine=sm.params.engine)
    files = run.pop("files")
    shutil.move(files["agg_results.csv"], sm.output.agg)
    shutil.move(files["results.csv"], sm.output.results)
    write_json({**info, **run, "versions": celleval.versions()}, sm.output.run_info)
    log.info("%s engine: %s", run["engine"], run)
