"""A content-addressed cache for a dataset's fixed scoring costs (the VCC 2026 real bundle, the split-half ceiling).

Both depend only on the truth (and the seed and the scorer's version), not on the models: a re-run of stage 1 that
writes the same truth, a ``--forcerun``, or a second checkout scoring the same data finds them here instead of
computing them again. An entry is a folder ``<cache>/<kind>-<key>/`` where ``key`` is the sha256 of the inputs'
sha256 and the settings; it is written into a temporary folder and renamed into place, so a reader never sees half
an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_key(files: list[str | os.PathLike], settings: dict[str, Any]) -> str:
    """sha256 over the files' contents (each hashed) and the settings (as sorted JSON)."""
    from pertpipe.integrity import sha256_file

    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def cached_folder(cache_dir: str | os.PathLike | None, kind: str, key: str, dest: str | os.PathLike,
                  build: Callable[[Path], None]) -> bool:
    """Fill folder ``dest`` from the cache entry ``kind``-``key``, or run ``build(dest)`` and store a copy of what it
    wrote. Returns whether the entry came from the cache. ``cache_dir`` None: always build, store nothing."""
    from pertpipe.io import work_dir

    dest = Path(dest)
    if not cache_dir:
        build(dest)
        return False
    entry = Path(cache_dir) / f"{kind}-{key[:32]}"
    if (entry / ".complete").is_file():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(entry, dest, ignore=shutil.ignore_patterns(".complete"))
        return True
    build(dest)
    try:
        with work_dir(entry.parent) as tmp:
            staged = tmp / "entry"
            shutil.copytree(dest, staged)
            (staged / ".complete").write_text(key + "\n")
            if not entry.exists():
                os.replace(staged, entry)
    except OSError:  # a read-only or full cache folder: the result stands, it is only not kept
        pass
    return False
