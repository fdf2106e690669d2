"""The dataset registry (resources/datasets.yaml): what can be downloaded, from where, with which checksum."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pertpipe.errors import ConfigError

_ARCHIVES = ("none", "zip", "tar.gz")
_ENTRY_KEYS = {
    "url", "sha256", "archive", "member", "file", "mirror", "source", "simulated", "adapter", "adapter_options",
    "filter", "universe", "description", "licence", "citation",
}


@dataclass(frozen=True)
class Entry:
    """One registry entry (a dataset or a reference resource)."""

    name: str
    kind: str  # "dataset" or "resource"
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    archive: str = "none"
    member: str | None = None
    file: str | None = None
    mirror_path: str | None = None
    mirror_sha256: str | None = None
    source: str | None = None
    simulated: bool = False
    adapter: str | None = None
    adapter_options: dict[str, Any] = field(default_factory=dict)
    filter: dict[str, list[str]] = field(default_factory=dict)
    universe: str | None = None
    description: str = ""
    licence: str = ""
    citation: str = ""

    @property
    def download_name(self) -> str:
        """The entry whose download this one uses (itself unless ``source`` names another)."""
        return self.source or self.name

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.urls[0] if self.urls else None, "sha256": self.sha256,
                "licence": self.licence, "citation": self.citation}


class Registry:
    """Parsed ``datasets.yaml``: look entries up by name with errors that list what exists."""

    def __init__(self, entries: dict[str, Entry], path: str | os.PathLike = "<registry>") -> None:
        self.entries = entries
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registry:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: dataset registry not found. Fix: set `registry:` in config to its path") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}). Fix: correct the registry file") from exc
        entries: dict[str, Entry] = {}
        for kind, section in (("dataset", "datasets"), ("resource", "resources")):
            for name, spec in (raw.get(section) or {}).items():
                entries[name] = _parse_entry(path, kind, name, spec or {})
        reg = cls(entries, path)
        for e in entries.values():
            if e.source and e.source not in entries:
                raise ConfigError(f"{path}: {e.name}.source names '{e.source}', which is not in the registry. "
                                  f"Fix: use one of {sorted(entries)}")
            if e.universe and e.universe not in entries and not e.simulated:
                raise ConfigError(f"{path}: {e.name}.universe names '{e.universe}', which is not a registry entry")
        return reg

    def get(self, name: str, kind: str | None = None) -> Entry:
        entry = self.entries.get(name)
        if entry is None or (kind and entry.kind != kind):
            names = sorted(n for n, e in self.entries.items() if not kind or e.kind == kind)
            what = kind or "entry"
            raise ConfigError(f"{self.path}: unknown {what} '{name}'. Fix: use one of {names} "
                              f"or add an entry to {self.path}")
        return entry

    def dataset(self, name: str) -> Entry:
        return self.get(name, "dataset")

    def download_entry(self, name: str) -> Entry:
        """The entry that actually carries the URL for ``name`` (following ``source``)."""
        return self.get(self.get(name).download_name)

    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, e in self.entries.items() if not kind or e.kind == kind)


def _parse_entry(path: Path, kind: str, name: str, spec: dict[str, Any]) -> Entry:
    unknown = set(spec) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{path}: {name}: unknown field(s) {sorted(unknown)}. Fix: use only {sorted(_ENTRY_KEYS)}")
    urls = spec.get("url") or ()
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    archive = spec.get("archive", "none") or "none"
    if archive not in _ARCHIVES:
        raise ConfigError(f"{path}: {name}.archive is '{archive}'. Fix: use one of {list(_ARCHIVES)}")
    if archive != "none" and not spec.get("member"):
        raise ConfigError(f"{path}: {name}: archive '{archive}' needs `member` (the file inside the archive)")
    simulated = bool(spec.get("simulated", False))
    if not simulated and not spec.get("source"):
        if not urls:
            raise ConfigError(f"{path}: {name}: needs `url` (or `source:` naming another entry, or `simulated: true`)")
        if not spec.get("file"):
            raise ConfigError(f"{path}: {name}: needs `file` (the local file name after download)")
    if kind == "dataset" and not spec.get("adapter"):
        raise ConfigError(f"{path}: dataset {name} needs `adapter`")
    sha = spec.get("sha256")
    if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha).lower())):
        raise ConfigError(f"{path}: {name}.sha256 '{sha}' is not a 64-digit hex sha256 (or null)")
    mirror = spec.get("mirror") or {}
    return Entry(
        name=name, kind=kind, urls=urls, sha256=sha.lower() if sha else None, archive=archive,
        member=spec.get("member"), file=spec.get("file"), mirror_path=mirror.get("path"),
        mirror_sha256=mirror.get("sha256"), source=spec.get("source"), simulated=simulated,
        adapter=spec.get("adapter"), adapter_options=dict(spec.get("adapter_options") or {}),
        filter={k: [str(v) for v in (vals if isinstance(vals, list) else [vals])]
                for k, vals in (spec.get("filter") or {}).items()},
        universe=spec.get("universe"), description=spec.get("description", ""),
        licence=spec.get("licence", ""), citation=spec.get("citation", ""),
    )
