"""Error types. Every message names the file, the field and the fix."""

from __future__ import annotations


class PertpipeError(Exception):
    """Base class: a user-facing error whose message says what is wrong, where, and how to fix it."""


class ConfigError(PertpipeError):
    """The configuration or the dataset registry names something that does not exist or is invalid."""


class ContractError(PertpipeError):
    """A file breaks the canonical AnnData contract (see pertpipe.data.validate)."""

    def __init__(self, path: object, field: str, problem: str, fix: str) -> None:
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f"{path}: field '{field}': {problem}. Fix: {fix}")


class DownloadError(PertpipeError):
    """A download failed: HTTP error, dropped connection after retries, checksum mismatch, corrupt archive."""


class LeakageError(PertpipeError):
    """A held-out perturbation appears in the training split."""
