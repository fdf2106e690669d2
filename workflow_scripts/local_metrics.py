"""Rule local_metrics: the fast local scorer, and its agreement with cell-eval per perturbation and metric."""
import time

from pertpipe.evaluation import celleval
from pertpipe.evaluation.scoring import score_local
from pertpipe.evaluation.report import consistency
from pertpipe.io import atomic_path, read_json, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "local_metrics", verify=sm.input) as log:
    t0 = time.perf_counter()
    table, agg = score_local(sm.input.predictions, sm.input.truth)
    wall = round(time.perf_counter() - t0, 3)
    with atomic_path(sm.output.table) as tmp:
        table.to_csv(tmp, index=False)
    write_json({"mean": agg, "wall_s": wall, "n_perturbations": int(len(table)), "versions": celleval.versions()},
               sm.output.metrics)
    engine = read_json(sm.input.run_info)["engine"]
    if engine == "local":  # results.csv is the local scorer's own: nothing to compare
        cons = {"engine": engine, "metrics": {}, "note": "cell-eval run was not run (evaluation.run_engine chose "
                "the local engine for this size); agreement with cell-eval is measured where both run"}
    else:
        cons = {"engine": engine, **consistency(sm.input.results, table)}
    cons["versions"] = celleval.versions()
    write_json(cons, sm.output.consistency)
    log.info("local scorer %.2fs; %s engine, max |local - cell-eval|: %s", wall, engine,
             {k: v["max_abs_diff"] for k, v in cons["metrics"].items()})
