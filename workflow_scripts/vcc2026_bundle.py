"""Rule vcc2026_bundle: the truth's raw counts and cell-eval2's real bundle (generic-response baseline = 0, split-half
replicate anchor = 1) for VCC 2026 scoring; with profile `both`, data without counts are skipped with the reason."""
from pathlib import Path

from pertpipe.errors import PertpipeError
from pertpipe.evaluation import vcc2026
from pertpipe.io import script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "vcc2026_bundle", verify=sm.input) as log:
    files = Path(sm.output.files)
    files.mkdir(parents=True, exist_ok=True)
    try:
        real = vcc2026.write_real_counts(sm.input.val, sm.input.truth, files / "real_counts.h5ad",
                                         chunk_size=sm.params.chunk_size)
        info = {**real, **vcc2026.build_bundle(files / "real_counts.h5ad", files, seed=sm.params.seed,
                                               log_file=sm.log[0]), "versions": vcc2026.versions()}
    except PertpipeError as exc:
        if sm.params.required:
            raise
        info = {"skipped": f"VCC 2026 scores not computed: {exc}"}
        log.warning("%s", info["skipped"])
    write_json(info, sm.output.info)
