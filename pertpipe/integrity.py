"""Verify what you read: every rule records the sha256 of each file it writes (a ``.<name>.sha256`` sidecar written
by the workflow scripts' harness when the rule succeeds, and for the main artifacts also ``outputs_sha256`` in the
rule's own JSON: split.json, ground_truth.json, train_log.json, predict.json), and every rule checks the files it
reads against those records before using them. A file changed after its rule made it (edited, truncated, copied over) stops the
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


def sidecar(path: str | os.PathLike) -> Path:
    """Where the record of a file written by a rule lives: ``.<name>.sha256`` beside it."""
    p = Path(path)
    return p.with_name(f".{p.name}.sha256")


def record_outputs(outputs: Iterable[Any], rule: str) -> list[str]:
    """After a rule succeeded: each output file's sha256 and the rule's name in its :func:`sidecar` (written
    atomically), so every later rule can check the file is the one this rule wrote. Folders are left out (their
    files are recorded where a rule reads them)."""
    import tempfile

    done = []
    for path in _flat(outputs):
        if os.path.isfile(path):
            side = sidecar(path)
            fd, tmp = tempfile.mkstemp(dir=side.parent, prefix=side.name + ".")  # atomic: written, then renamed
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{sha256_file(path)} {rule}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, side)
            done.append(path)
    return done


def _sidecar_record(path: str) -> tuple[str, str, str] | None:
    side = sidecar(path)
    if not side.is_file():
        return None
    digest, _, rule = side.read_text().strip().partition(" ")
    return digest, rule or "?", str(side)


def verify_inputs(inputs: Mapping[str, Any] | Iterable[Any]) -> dict[str, str]:
    """Check every input file against its record: the sidecar its rule wrote (:func:`record_outputs`) and the
    records a rule keeps in its own JSON (:data:`RECORD_KEY`); returns the verified files (name -> sha256).
    Raises :class:`ContractError` on the first mismatch, naming the file, both hashes and the rule to re-run."""
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
        if not os.path.isfile(path):
            continue
        name = Path(path).name
        checks = []
        side = _sidecar_record(path)
        if side:
            checks.append(side)
        if name in recorded and not path.endswith(".json"):
            # a record names the files its rule wrote beside it: with several records of one name (a batch of
            # rows' predictions.h5ad), the one in the file's own folder
            cands = recorded[name]
            here = [c for c in cands if os.path.dirname(os.path.abspath(c[2])) == os.path.dirname(os.path.abspath(path))]
            checks.append((here or cands)[0])
        if not checks:
            continue
        actual = sha256_file(path)
        for expected, rule, where in checks:
            if actual != expected:
                raise ContractError(path, "sha256", f"is {actual} but rule {rule} recorded {expected} when it wrote "
                                    f"the file ({where}): it changed after it was made", "delete it and re-run the "
                                    f"rule that makes it (snakemake --forcerun {rule}), or restore the original")
        verified[os.path.relpath(path)] = actual
    return verified
