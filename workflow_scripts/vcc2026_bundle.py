"""Rule vcc2026_bundle: the truth's raw counts and cell-eval2's real bundle (generic-response baseline = 0, split-half
replicate anchor = 1) for VCC 2026 scoring, from the scoring cache when this truth built it before; with profile
`both`, data without counts are skipped with the reason."""
from pathlib import Path

from pertpipe.errors import PertpipeError
from pertpipe.evaluation import vcc2026
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "vcc2026_bundle", job=sm) as log:
    files = Path(sm.output.files)
    try:
        info = vcc2026.real_bundle(sm.input.val, sm.input.truth, files, seed=sm.params.seed,
                                   chunk_size=sm.params.chunk_size, log_file=sm.log[0], cache_dir=sm.params.cache)
    except PertpipeError as exc:
        if sm.params.required:
            raise
        files.mkdir(parents=True, exist_ok=True)
        info = {"skipped": f"VCC 2026 scores not computed: {exc}"}
        log.warning("%s", info["skipped"])
    cache = info.pop("cache", "skipped")  # not in the file: a re-run writes the same bytes
    write_json(info, sm.output.info)
    log.info("bundle: %s", cache)
