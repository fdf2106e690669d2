"""Small I/O helpers shared by every stage: atomic writes, checksums, JSON, provenance, logging."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pertpipe.integrity import sha256_file  # noqa: F401  (defined there, below io; used across the package)

log = logging.getLogger("pertpipe")

_PROVENANCE_PACKAGES = ("pertpipe", "anndata", "numpy", "scipy", "h5py", "pandas", "torch", "cell-eval", "pdex")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure (or a kill) leaves no file at ``path``: the temporary is removed on error, and a stale
    temporary from a killed process has a ``.tmp-`` name no rule ever reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # O_EXCL with mode 0o666: the process umask applies, as for any file the rule writes
        tmp_path = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix or path.suffix}"
        try:
            os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically (the same object gives the same bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def config_hash(obj: Any) -> str:
    """Stable short hash of a (JSON-able) configuration fragment."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions(names: tuple[str, ...] = _PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide the numbers (missing ones are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(stage: str, *, source: dict[str, Any] | None = None, params: Any = None) -> dict[str, Any]:
    """The ``uns["pertpipe"]`` record: stage, source (name, url, sha256), config hash, package versions."""
    return {
        "stage": stage,
        "source": dict(source or {}),
        "config_hash": config_hash(params),
        "versions": package_versions(),
        "python": sys.version.split()[0],
    }


def carry_provenance(uns: dict[str, Any], stage: str, *, params: Any = None, **extra: Any) -> dict[str, Any]:
    """``uns`` of the input with this stage's :func:`provenance` record added under ``uns["pertpipe"][stage]``
    (and ``extra`` keys beside it), so every artifact carries the history of the stages before it."""
    prov = dict(uns.get("pertpipe") or {})
    prov[stage] = provenance(stage, params=params)
    prov.update(extra)
    return {**uns, "pertpipe": prov}


class RedactingFilter(logging.Filter):
    """Removes credentials from every record a handler writes (:func:`pertpipe.errors.redact`): libraries log
    request URLs (urllib3's retry warnings quote the query, ``api_key`` included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pertpipe.errors import redact

        text = record.getMessage()
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup_logging(log_file: str | os.PathLike | None = None, *, level: int = logging.INFO) -> logging.Logger:
    """Send pertpipe's logging (and warnings) to ``log_file`` (a rule's ``log:``) and to stderr, credentials
    redacted (:class:`RedactingFilter`)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RedactingFilter())
        root.addHandler(h)
    logging.captureWarnings(True)
    return log


def os_error_message(exc: BaseException) -> str | None:
    """One line (the path, what is wrong, the fix) for the operating-system failures a user causes: permission
    denied, a read-only disk, a folder where a file belongs (or the reverse), a full disk or quota. h5py reports
    them inside its own message (``errno = 28``), which is read too. None for anything else."""
    import errno as E
    import re

    if not isinstance(exc, OSError):
        return None
    code, path = exc.errno, exc.filename
    text = str(exc)
    if code is None:  # h5py: "Unable to create file (unable to open file: name = 'x', errno = 13, ...)"
        m = re.search(r"errno = (\d+)", text)
        code = int(m.group(1)) if m else None
    if path is None:
        n = re.search(r"name = '([^']+)'", text)
        path = n.group(1) if n else None
    where = path or "an output of this rule"
    fixes = {
        E.EACCES: (f"permission denied: {where}", "make it readable/writable for this user (chmod/chown), or point "
                   "results: / downloads: at a folder you own"),
        E.EROFS: (f"{where} is on a read-only file system", "point results: / downloads: at a writable folder"),
        E.EISDIR: (f"{where} is a folder where a file is expected", "give the file's path (config dataset:/datasets:, "
                   "an input), or remove the folder in the way"),
        E.ENOTDIR: (f"a part of {where} is a file where a folder is expected", "fix the path, or remove the file in "
                    "the way"),
        E.ENOSPC: (f"no space left on the device holding {where}", "free space, or move results: / downloads: to a "
                   "larger disk, then re-run: finished outputs are kept"),
        E.EDQUOT: (f"disk quota exceeded writing {where}", "free space in your quota or move results: elsewhere"),
    }
    fixes[E.EPERM] = fixes[E.EACCES]
    if code not in fixes:
        return None
    problem, fix = fixes[code]
    return f"{problem}. Fix: {fix}"


@contextlib.contextmanager
def script_step(log_file: str | os.PathLike | None, name: str, *, verify: Any = None, job: Any = None,
                resume: str | None = None) -> Iterator[logging.Logger]:
    """Harness for a workflow script: log to the rule's log file; a user error exits 1 with its message.

    ``verify`` (the rule's inputs): every input a producing rule recorded the sha256 of is checked first
    (:func:`pertpipe.integrity.verify_inputs`). ``job`` (the script's ``snakemake`` object) does it for the job's
    inputs and, when the step succeeds, records the sha256 of each of its outputs for the rules that read them
    (:func:`pertpipe.integrity.record_outputs`).

    ``PertpipeError`` messages (which name the file, field and fix) are logged without a traceback;
    anything else is logged with its traceback and re-raised. Ctrl-C (SIGINT) is one line, not a traceback: what
    was kept (``resume``: e.g. the training checkpoint and that a re-run resumes from it) and exit 130.
    """
    from pertpipe.errors import PertpipeError

    logger = setup_logging(log_file)
    step_log = logging.getLogger(f"pertpipe.{name}")
    step_log.info("start %s", name)
    try:
        if job is not None and verify is None:
            verify = job.input
        if verify is not None:
            from pertpipe.integrity import verify_inputs

            checked = verify_inputs(verify)
            if checked:
                step_log.info("inputs match their recorded sha256: %s", ", ".join(sorted(checked)))
        yield step_log
        if job is not None:
            from pertpipe.integrity import record_outputs

            record_outputs(job.output, job.rule)
    except KeyboardInterrupt:
        step_log.error("%s interrupted (Ctrl-C): %s", name, resume or "no output of this step was written (outputs "
                       "are moved into place only when complete); re-run the same command to do it again")
        sys.stderr.flush()
        raise SystemExit(130) from None
    except PertpipeError as exc:
        step_log.error("%s failed: %s", name, exc)
        sys.stderr.flush()
        raise SystemExit(1) from None
    except OSError as exc:
        line = os_error_message(exc)
        if line is None:
            step_log.exception("%s failed with an unexpected error", name)
            raise
        step_log.error("%s failed: %s", name, line)
        sys.stderr.flush()
        raise SystemExit(1) from None
    except Exception:
        step_log.exception("%s failed with an unexpected error", name)
        raise
    step_log.info("done %s", name)
    del logger


def pick_device(device: str = "auto", *, field: str = "device") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is a clear error."""
    import torch

    from pertpipe.errors import ConfigError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"{field} is '{device}'. Fix: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} is 'cuda' but no GPU is visible. Fix: set {field} to auto or cpu")
    return device


# -- torch files: plain data only, loaded with weights_only=True, byte-identical for identical content -----------
_NDARRAY, _NDLIST = "__ndarray__", "__ndarray_list__"


def _encode_plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy arrays as tensors (numeric) or lists (text), numpy scalars as Python numbers; anything that
    is not a tensor, a number, a string, bytes, None, a list, tuple or dict is refused (it would need pickle)."""
    import torch

    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biufc" and obj.dtype.kind != "u" or obj.dtype == np.uint8:
            return {_NDARRAY: torch.from_numpy(np.array(obj, copy=True, order="C"))}
        return {_NDLIST: obj.tolist(), "dtype": obj.dtype.str if obj.dtype.kind in "USu" else "object"}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _encode_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_encode_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return out if isinstance(obj, list) else tuple(out)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype)):
        return obj
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be saved as plain data (tensors, numbers, strings, "
                    "lists, dicts); convert it in the model's state()")


def _decode_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and _NDARRAY in obj:
            return obj[_NDARRAY].cpu().numpy()
        if set(obj) == {_NDLIST, "dtype"}:
            return np.array(obj[_NDLIST], dtype=None if obj["dtype"] == "object" else obj["dtype"])
        return {k: _decode_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_decode_plain(v) for v in obj)
    return obj


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (plain data: see :func:`load_torch`) as a torch file, atomically. The bytes depend only on the
    content (serialised in memory, so no temporary name ends up inside the archive)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(_encode_plain(obj, Path(path).name), buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_torch(path: str | os.PathLike, *, map_location: Any = "cpu") -> Any:
    """Read a torch file with ``weights_only=True``: tensors, numbers, strings, lists and dicts only (numpy arrays
    as :func:`save_torch` stores them). A file that needs anything else (pickled code) is refused, never run."""
    import pickle

    import torch

    from pertpipe.errors import ContractError

    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "nsupported" in ln and "GLOBAL" in ln.upper()]
        first = (lines[0] if lines else type(exc).__name__)[:200]
        raise ContractError(path, "pickle", "holds Python objects other than tensors and plain containers, which "
                            f"loading would have to execute ({first})", "re-create the file with this version of "
                            "pertpipe (delete it and re-run the rule that writes it); never load such a file from a "
                            "source you do not trust") from None
    return _decode_plain(blob)


# -- child processes and work folders: nothing outlives a killed job ------------------------------------------------
TMP_PREFIX = ".pertpipe-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def work_dir(parent: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder in ``parent`` (the same filesystem, so results move into place atomically) named
    ``.pertpipe-tmp-<pid>-...``: removed on any exit the process sees; one left by a killed process (its pid is
    gone) is removed the next time a job works in ``parent``."""
    import shutil
    import tempfile

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{TMP_PREFIX}*"):
        pid = stale.name[len(TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmp:
        yield Path(tmp)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies (PR_SET_PDEATHSIG), so a job killed
    by the scheduler or the OOM killer takes its children (cell-eval, zstd, torchrun) along."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not Linux: the process group still carries the job's signals
        pass


def child_options() -> dict[str, Any]:
    """``subprocess`` keyword arguments for a child that must not outlive this process."""
    return {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}


def explain_exit(what: str, returncode: int) -> str:
    """``what`` failed with ``returncode``, in words: a negative code is a signal (SIGKILL: most often the kernel's
    out-of-memory killer)."""
    import signal

    if returncode >= 0:
        return f"{what} failed (exit {returncode})"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = (": perhaps out of memory (the kernel's OOM killer sends SIGKILL). Fix: give the job more memory "
            "(resources mem_mb / the profile), or use the streaming engines (evaluation.run_engine / prep_engine: "
            "auto)") if -returncode == signal.SIGKILL else ""
    return f"{what} was killed ({returncode}: {name}){hint}"


def run_tool(cmd: list[str], what: str, *, error_cls: type[Exception], log_file: str | os.PathLike | None = None,
             said: str | None = None) -> Any:
    """Run an outside command-line tool (cell-eval, cell-eval2, vcc-cli) as a child that dies with this process.

    The command and its output are appended to ``log_file``; a signal or a non-zero exit raises ``error_cls`` with
    ``what`` and the tool's last lines (``said``: how the message names the tool, default the first word of
    ``what``)."""
    import subprocess

    log.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **child_options())
    if log_file:
        with open(log_file, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
    if proc.returncode < 0:  # a signal: the tool's own last words (a half-written folder) would mislead
        raise error_cls(explain_exit(what, proc.returncode))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise error_cls(f"{what} failed (exit {proc.returncode}). {said or what.split()[0]} said:\n{tail}")
    return proc


_HELD_LOCKS: list[Any] = []


def hold_results_lock(folder: str | os.PathLike, dataset: str, *, who: str) -> Any:
    """Take the lock of a dataset's results for this run (an exclusive ``flock`` on
    ``<folder>/.pertpipe-<dataset>.lock``, held
    until the process ends) so that two checkouts or two runs pointing ``results:`` at one folder do not write it at
    once (Snakemake's own lock is per working directory). Returns the open file. Raises
    :class:`~pertpipe.errors.PertpipeError` naming the run that holds it."""
    import fcntl

    from pertpipe.errors import PertpipeError

    path = Path(folder) / f".pertpipe-{dataset}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another run"
        fh.close()
        raise PertpipeError(f"{path}: {holder} is writing this results folder now. Fix: wait for it to finish, or "
                            "set results: to another folder for this run") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} ({who})\n")
    fh.flush()
    _HELD_LOCKS.append(fh)  # held until this process ends, whatever the caller keeps
    return fh
