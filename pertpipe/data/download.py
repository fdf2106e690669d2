"""Resumable, checksummed, mirror-able downloads of registry entries.

Order of attempts for an entry: the mirror (``mirror:`` in config; a folder or an http(s) base URL, laid
out like ../shared/data), then each upstream URL. HTTP transfers stream into ``<file>.part`` and resume
with a ``Range`` request after a dropped connection; each attempt is retried with exponential backoff.
The sha256 is checked against the registry (or the lock file, for entries whose checksum is null: the
first download records it, later ones must match). Archives are cached once per URL and the wanted
member is extracted; every final file appears by atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests

from pertpipe.data.registry import Entry
from pertpipe.errors import DownloadError, clean_url
from pertpipe.http_session import RETRY_STATUS, retrying_session
from pertpipe.io import atomic_path, sha256_file

log = logging.getLogger(__name__)



@dataclass
class Attempt:
    origin: str
    error: str
    network: bool  # True when the failure was a connection problem (offline?)


class _NotFound(Exception):
    pass


class _NetworkFailure(Exception):
    pass


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for the block; the (empty) lock file is removed afterwards, so none is left
    behind (Snakemake runs one job per download, so no other process waits on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fcntl.flock(fh, fcntl.LOCK_UN)


def defined_in(entry: Entry) -> str:
    """Where a download entry was defined, for the fix in a message: the user's config or the registry file."""
    return (f"your config's `datasets: {entry.name}` entry" if entry.user
            else f"the registry entry '{entry.name}' (resources/datasets.yaml)")


def _progress(total: int | None, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                mininterval=2.0, disable=None)


def _stream_to_part(resp: requests.Response, part: Path, have: int, name: str, chunk_size: int) -> tuple[bool, str]:
    """Append (206) or write (200) the body to ``part``; (complete?, why not)."""
    mode = "ab" if resp.status_code == 206 else "wb"
    start = have if resp.status_code == 206 else 0
    if have and resp.status_code == 200:
        log.info("server ignored the Range request; restarting %s from byte 0", resp.url)
    length = resp.headers.get("Content-Length")
    total = start + int(length) if length is not None else None
    written = start
    try:
        with open(part, mode) as fh, _progress(total, start, name) as bar:
            for block in resp.iter_content(chunk_size=chunk_size):
                fh.write(block)
                written += len(block)
                bar.update(len(block))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if total is not None and written < total:
        return False, f"connection dropped at {written}/{total} bytes"
    return True, ""


def http_download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 4,
                  backoff: float = 1.0, timeout: float = 30.0, chunk_size: int = 1 << 16,
                  session: requests.Session | None = None, where: str = "resources/datasets.yaml") -> str:
    """Stream ``url`` to ``dest`` with resume and retries; returns the sha256 of the complete file.

    Connection errors and 429/5xx answers are retried by the session (:mod:`pertpipe.http_session`, urllib3
    ``Retry``). A connection that drops during the transfer is resumed here: the transfer goes to
    ``dest + '.part'`` and the next try asks for the remaining bytes with ``Range``. A checksum mismatch deletes
    the part file and raises.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sess = session or retrying_session(retries=retries, backoff=backoff)
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            log.warning("resume %d/%d of %s in %.1fs (%s)", attempt, retries, url, wait, last_error)
            time.sleep(wait)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = sess.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True)
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL,
                requests.exceptions.MissingSchema) as exc:
            raise DownloadError(f"{url}: not a URL this pipeline can fetch ({exc}). Fix: use an http(s):// or "
                                "file:// URL, or `path:` for a local file") from exc
        except (requests.ConnectionError, requests.Timeout) as exc:  # the session retried already
            raise _NetworkFailure(f"{url}: gave up after {retries + 1} tries ({type(exc).__name__}: {exc})") from exc
        with resp:
            if resp.status_code == 404:
                raise _NotFound(f"HTTP 404 Not Found: {url}")
            if resp.status_code == 416 and have:
                break  # Range past the end: the part is complete (or stale); verified below
            if resp.status_code in RETRY_STATUS:
                raise _NetworkFailure(f"{url}: HTTP {resp.status_code} after {retries + 1} tries")
            if resp.status_code >= 400:
                raise DownloadError(f"HTTP {resp.status_code} {resp.reason} for {url}. "
                                    f"Fix: check the URL in {where} or set `mirror:`")
            done, last_error = _stream_to_part(resp, part, have, dest.name, chunk_size)
            if done:
                break
    else:
        raise _NetworkFailure(f"{url}: gave up after {retries + 1} tries ({last_error})")
    digest = sha256_file(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise DownloadError(f"sha256 mismatch for {url}: expected {sha256}, got {digest}. The partial file "
                            f"{part} was deleted. Fix: re-run to download again; if it persists, the upstream file "
                            f"changed: update sha256 in {where}")
    os.replace(part, dest)
    return digest


def _copy_local(src: Path, dest: Path, *, sha256: str | None, what: str = "mirror file",
                where: str = "resources/datasets.yaml") -> str:
    if not src.is_file():
        raise _NotFound(f"not in mirror: {src}" if what == "mirror file" else f"no such {what}: {src}")
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, part)
    digest = sha256_file(part)
    if sha256 and digest != sha256:
        part.unlink()
        fix = ("restore the mirror file or correct mirror.sha256 in resources/datasets.yaml" if what == "mirror file"
               else f"check the file, or correct sha256 in {where}")
        raise DownloadError(f"sha256 mismatch for {what} {src}: expected {sha256}, got {digest}. "
                            f"The copy was deleted. Fix: {fix}")
    os.replace(part, dest)
    return digest


class LockFile:
    """sha256 records for entries whose registry checksum is null, keyed by entry and origin."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path or not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise DownloadError(f"{self.path}: lock file is not valid JSON ({exc}). Fix: repair it or delete it "
                                "to record checksums afresh") from exc

    def expected(self, entry: str, origin: str) -> str | None:
        return self._read().get(entry, {}).get(origin)

    def record(self, entry: str, origin: str, digest: str) -> None:
        if not self.path:
            return
        with _file_lock(self.path.with_name(self.path.name + ".lock")):
            data = self._read()
            data.setdefault(entry, {})[origin] = digest
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _extract_member(archive: Path, kind: str, member: str, dest: Path) -> None:
    """Extract ``member`` (exact path, else the unique entry with that basename) to ``dest`` atomically."""
    base = Path(member).name
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                name = member if member in names else _by_basename(names, base, archive, member)
                with zf.open(name) as src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        elif kind == "tar.gz":
            with tarfile.open(archive, "r:gz") as tf:
                names = [m.name for m in tf.getmembers() if m.isfile()]
                name = member if member in names else _by_basename(names, base, archive, member)
                src = tf.extractfile(name)
                assert src is not None
                with src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        else:
            raise ValueError(kind)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DownloadError(f"corrupt archive {archive} ({type(exc).__name__}: {exc}). It was deleted. "
                            "Fix: re-run to download it again") from exc


def _by_basename(names: list[str], base: str, archive: Path, member: str) -> str:
    hits = [n for n in names if Path(n).name == base]
    if len(hits) != 1:
        raise DownloadError(f"{archive}: member '{member}' not found (archive holds {len(names)} files, "
                            f"{len(hits)} named '{base}'). Fix: correct `member` in resources/datasets.yaml")
    return hits[0]


def _gunzip(src: Path, dest: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, atomic_path(dest) as tmp, open(tmp, "wb") as out:
            shutil.copyfileobj(fin, out, 1 << 20)
    except (OSError, EOFError) as exc:
        raise DownloadError(f"{src}: not a valid gzip file ({exc}). Fix: restore the mirror file") from exc


def _mirror_candidates(entry: Entry, mirror: str) -> list[tuple[str, str | None]]:
    """(location, sha256) pairs to try in the mirror for ``entry``."""
    out: list[tuple[str, str | None]] = []
    if entry.mirror_path:
        out.append((entry.mirror_path, entry.mirror_sha256))
        # the mirror may also point straight at the folder holding the file (e.g. .../data/perturbench)
        out.append((Path(entry.mirror_path).name, entry.mirror_sha256))
    if entry.file:
        out.append((f"{entry.name}/{entry.file}", None))
        if not entry.mirror_path or Path(entry.mirror_path).name != entry.file:
            out.append((entry.file, None))
    base = mirror.rstrip("/")
    return [(f"{base}/{rel}", sha) for rel, sha in out]


def fetch(entry: Entry, dest: str | os.PathLike, *, mirror: str | None = None,
          lock_file: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
          retries: int = 4, backoff: float = 1.0, timeout: float = 30.0) -> dict[str, Any]:
    """Download ``entry`` to ``dest`` (its final, extracted file) and return a manifest of where it came from.

    Raises :class:`DownloadError` naming every origin tried and why it failed.
    """
    dest = Path(dest)
    lock = LockFile(lock_file)
    cache = Path(cache_dir) if cache_dir else dest.parent / "_archives"
    attempts: list[Attempt] = []
    is_http = bool(mirror) and urlparse(mirror).scheme in ("http", "https")

    def verify_lock(origin: str, digest: str) -> None:
        origin = clean_url(origin)  # the lock file keys origins without credentials
        known = lock.expected(entry.name, origin)
        if known and known != digest:
            raise DownloadError(f"sha256 of {origin} is {digest} but the lock file {lock.path} recorded {known} "
                                "at the first download. Fix: the source changed; check it, then delete that "
                                "line of the lock file to accept the new version")

    def finish(obj: Path, origin: str, digest: str, registry_sha: str | None, *, from_mirror: bool) -> dict[str, Any]:
        if registry_sha is None:
            verify_lock(origin, digest)
        wants_archive = entry.archive != "none" and (not from_mirror or _looks_like_archive(obj, entry.archive))
        if wants_archive:
            try:
                _extract_member(obj, entry.archive, entry.member or "", dest)
            except DownloadError:
                obj.unlink(missing_ok=True)
                raise
        elif obj.suffix == ".gz" and not (entry.file or "").endswith(".gz"):
            _gunzip(obj, dest)
        elif obj != dest:
            with atomic_path(dest) as tmp:
                shutil.copyfile(obj, tmp)
        origin = clean_url(origin)
        if registry_sha is None:
            lock.record(entry.name, origin, digest)
        return {"entry": entry.name, "origin": origin, "sha256": digest, "checked_against":
                "registry" if registry_sha else ("lock" if lock.expected(entry.name, origin) else "none"),
                "file": str(dest), "bytes": dest.stat().st_size}

    # 1. mirror
    if mirror:
        for loc, sha in _mirror_candidates(entry, mirror):
            rel = loc[len(mirror.rstrip("/")) + 1:]
            origin = f"mirror:{rel}"
            obj = cache / f"mirror-{entry.name}-{Path(rel).name}"
            try:
                digest = (http_download(loc, obj, sha256=sha, retries=retries, backoff=backoff, timeout=timeout)
                          if is_http else _copy_local(Path(loc), obj, sha256=sha))
                try:
                    return finish(obj, origin, digest, sha, from_mirror=True)
                finally:
                    obj.unlink(missing_ok=True)
            except _NotFound as exc:
                attempts.append(Attempt(loc, str(exc), network=False))
            except _NetworkFailure as exc:
                attempts.append(Attempt(loc, str(exc), network=True))
            except DownloadError as exc:
                attempts.append(Attempt(loc, str(exc), network=False))
    # 2. upstream
    for url in entry.urls:
        url_key = hashlib.sha1(url.encode()).hexdigest()[:12]
        obj = cache / f"{url_key}-{Path(urlparse(url).path).name or 'download'}"
        with _file_lock(obj.with_name(obj.name + ".lock")):
            try:
                if obj.exists() and entry.sha256 and sha256_file(obj) != entry.sha256:
                    log.warning("cached %s does not match the registry's sha256: downloading it again", obj)
                    obj.unlink()
                if obj.exists():
                    digest = sha256_file(obj)
                elif urlparse(url).scheme == "file":  # a file:// URL: a local copy, checksummed the same way
                    digest = _copy_local(Path(url2pathname(urlparse(url).path)), obj, sha256=entry.sha256,
                                         what="local file (file:// URL)", where=defined_in(entry))
                else:
                    digest = http_download(url, obj, sha256=entry.sha256, retries=retries, backoff=backoff,
                                           timeout=timeout, where=defined_in(entry))
                manifest = finish(obj, url, digest, entry.sha256, from_mirror=False)
                if entry.archive == "none":
                    obj.unlink(missing_ok=True)
                return manifest
            except _NotFound as exc:
                attempts.append(Attempt(url, str(exc), network=False))
            except _NetworkFailure as exc:
                attempts.append(Attempt(url, str(exc), network=True))
            except DownloadError as exc:
                attempts.append(Attempt(url, str(exc), network=False))
    lines = "\n".join(f"  - {a.origin}: {a.error}" for a in attempts) or "  (no mirror and no upstream URL)"
    hint = ""
    if not mirror and any(a.network for a in attempts):  # offline is a guess worth making only after a network error
        hint = (f"\nNo `mirror:` is set. Offline? Put the file at {dest} yourself, or set `mirror:` in config to a "
                "folder or http(s) base URL laid out like ../shared/data "
                f"(this entry is looked up there as '{entry.mirror_path or entry.name + '/' + (entry.file or '')}').")
    raise DownloadError(f"could not download '{entry.name}' to {dest}; tried:\n{lines}{hint}")


def _looks_like_archive(obj: Path, kind: str) -> bool:
    """A mirror may hold the extracted member (e.g. vcc/gene_names.csv) instead of the archive."""
    name = obj.name.lower()
    return name.endswith(".zip") if kind == "zip" else name.endswith((".tar.gz", ".tgz"))
