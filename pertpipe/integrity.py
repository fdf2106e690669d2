"""Verify what you read: each rule records the sha256 of the files it writes (``outputs_sha256`` in its own JSON:
split.json, ground_truth.json, train_log.json, predict.json), and each consumer checks the files it reads against
those records before using them. A file changed after its rule made it (edited, truncated, copied over) stops the
consumer with the file, the recorded and the actual hash, and the fix, instead of flowing into every score.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pertpipe.errors import ContractError

RECORD_KEY = "outputs_sha256"


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def record(paths: Iterable[str | os.PathLike], rule: str) -> dict[str, Any]:
    """The record a producing rule stores in its JSON: file name -> sha256, and the rule's name (for the fix)."""
    return {"rule": rule, "files": {Path(p).name: sha256_file(p) for p in paths}}


def _flat(inputs: Mapping[str, Any] | Iterable[Any]) -> list[str]:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    out: list[str] = []
    for v in values:
        if isinstance(v, (str, os.PathLike)):
            out.append(str(v))
        elif isinstance(v, Iterable):
            out += [str(x) for x in v]
    return out


def verify_inputs(inputs: Mapping[str, Any] | Iterable[Any]) -> dict[str, str]:
    """Check every input file that a record among ``inputs`` (JSON files with :data:`RECORD_KEY`) names; returns
    the verified files (name -> sha256). Raises :class:`ContractError` on the first mismatch."""
    files = _flat(inputs)
    recorded: dict[str, list[tuple[str, str, str]]] = {}  # name -> [(sha256, rule, record file)]
    for path in files:
        if path.endswith(".json") and os.path.exists(path):
            try:
                rec = json.loads(Path(path).read_text()).get(RECORD_KEY)
            except (ValueError, AttributeError):
                rec = None
            for name, digest in ((rec or {}).get("files") or {}).items():
                recorded.setdefault(name, []).append((digest, rec.get("rule", "?"), path))
    verified = {}
    for path in files:
        name = Path(path).name
        if name in recorded and not path.endswith(".json"):
            # a record names the files its rule wrote beside it: with several records of one name (a batch of
            # rows' predictions.h5ad), the one in the file's own folder
            cands = recorded[name]
            here = [c for c in cands if os.path.dirname(os.path.abspath(c[2])) == os.path.dirname(os.path.abspath(path))]
            expected, rule, where = (here or cands)[0]
            actual = sha256_file(path)
            if actual != expected:
                raise ContractError(path, "sha256", f"is {actual} but rule {rule} recorded {expected} when it wrote "
                                    f"the file ({where}): it changed after it was made", "delete it and re-run the "
                                    f"rule that makes it (snakemake --forcerun {rule}), or restore the original")
            verified[os.path.relpath(path) if len(cands) > 1 else name] = actual
    return verified
