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
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#'\"<>]+@")  # scheme://user:password@host
REDACTED = "[REDACTED]"
_REGISTERED: set[str] = set()  # values named as credentials by the config (knowledge.*.api_key_env, ...)


def register_secret(value: str | None) -> None:
    """Redact ``value`` from every message and log record of this process from now on: the value of a variable the
    config names as a credential (``knowledge.llm.api_key_env: LLM_CRED``) whatever the variable is called."""
    if value and len(value) >= 4:
        _REGISTERED.add(value)


def clean_url(url: str | None) -> str | None:
    """A URL as provenance, lock files and manifests keep it: without ``user:password@`` and with secret query
    values redacted (``?api_key=[REDACTED]``)."""
    if not url:
        return url
    return redact(_USERINFO.sub(lambda m: m.group(1), url))


def redact(text: str) -> str:
    """``text`` with credentials removed: secret query parameters (``api_key=...``, ``token=...``), a URL's
    ``user:password@``, Authorization headers and bearer tokens, the literal value of any environment variable whose
    name says it is a secret (``NCBI_API_KEY``, ``OPENAI_API_KEY``, ...) and of any registered one
    (:func:`register_secret`). Used for every error message and every log record."""
    if not text:
        return text
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, REDACTED)
    for value in sorted(_REGISTERED, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
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
