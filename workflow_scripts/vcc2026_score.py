"""Rule vcc2026_score: one row's predictions as counts (library sizes of matching training controls), scored by
cell-eval2's vcc2026 preset against the dataset's real bundle -> vcc2026.json (+ the run's aggregate and metadata)."""
import tempfile
from pathlib import Path

from pertpipe.evaluation import vcc2026
from pertpipe.io import read_json, script_step, write_json, write_text

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "vcc2026_score", verify=sm.input) as log:
    info = read_json(sm.input.info)
    if "skipped" in info:
        write_text("", sm.output.agg)
        write_text("{}", sm.output.meta)
        write_json({"profile": "vcc2026", "skipped": info["skipped"]}, sm.output.score)
    else:
        files = Path(sm.input.files)
        with tempfile.TemporaryDirectory(dir=Path(sm.output.score).parent) as tmp:
            counts = vcc2026.to_counts(sm.input.predictions, sm.input.train, Path(tmp) / "pred_counts.h5ad",
                                       seed=sm.params.seed, chunk_size=sm.params.chunk_size)
            result = vcc2026.score(Path(tmp) / "pred_counts.h5ad", files / "real_counts.h5ad", files / "bundle",
                                   agg_out=sm.output.agg, meta_out=sm.output.meta, log_file=sm.log[0])
        write_json({**result, "counts": counts}, sm.output.score)
        log.info("vcc2026 avg_score %s", result["avg_score"])
