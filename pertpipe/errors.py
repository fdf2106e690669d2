"""Error types. Every message names the file, the field and the fix, and never carries a secret (:func:`redact`)."""

from __future__ import annotations

import os
import re

# query parameters and headers that carry credentials (NCBI's api_key, tokens, passwords, signed URLs)
_SECRET_QUERY = re.compile(r"(?i)\b(api[_-]?key|apikey|key|token|access[_-]?token|auth|password|passwd|secret|"
                           r"signature|sig|x-amz-signature)=([^&\s'\"<>]+)")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+")
_BEARER = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_SECRET_ENV = re.compile(r"(?i)(key|token|secret|password|passwd)")
REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """``text`` with credentials removed: secret query parameters (``api_key=...``, ``token=...``), Authorization
    headers and bearer tokens, and the literal value of any environment variable whose name says it is a secret
    (``NCBI_API_KEY``, ``OPENAI_API_KEY``, ...). Used for every error message and every log record."""
    if not text:
        return text
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, REDACTED)
    text = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class PertpipeError(Exception):
    """Base class: a user-facing error whose message says what is wrong, where, and how to fix it (redacted)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


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
