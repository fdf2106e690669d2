"""Rule download: fetch one registry entry (mirror first, then upstream), checksummed and resumable."""
from pathlib import Path

from pertpipe.data.download import fetch
from pertpipe.data.registry import load_registry
from pertpipe.errors import DownloadError
from pertpipe.io import script_step

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "download", job=sm) as log:
    entry = load_registry(sm.params.registry, sm.params.user_datasets).get(sm.params.entry)
    dest = Path(sm.output[0])
    if entry.file != dest.name:
        raise DownloadError(f"{dest}: registry entry '{entry.name}' downloads to '{entry.file}', not '{dest.name}'")
    manifest = fetch(entry, dest, mirror=sm.params.mirror, lock_file=sm.params.lock_file,
                     cache_dir=dest.parent.parent / "_archives", retries=sm.params.retries,
                     backoff=sm.params.backoff, timeout=sm.params.timeout)
    log.info("downloaded %s", manifest)
