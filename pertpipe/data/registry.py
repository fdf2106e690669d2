"""The dataset registry (resources/datasets.yaml): what can be downloaded, from where, with which checksum."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pertpipe.errors import ConfigError

_ARCHIVES = ("none", "zip", "tar.gz")
_ENTRY_KEYS = {
    "url", "sha256", "archive", "member", "file", "mirror", "source", "simulated", "adapter", "adapter_options",
    "filter", "universe", "description", "licence", "citation", "path", "species", "inputs",
}
SPECIES = ("human", "mouse")
_USER_KEYS = {"path", "url", "sha256", "adapter", "adapter_options", "filter", "universe", "description",
              "licence", "citation", "archive", "member"}


@dataclass(frozen=True)
class Entry:
    """One registry entry (a dataset or a reference resource)."""

    name: str
    kind: str  # "dataset", "resource" or "spatial" (a spatial + scRNA pair whose files are other entries)
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
    path: str | None = None  # a local file used in place (a user's own data): nothing is downloaded
    user: bool = False  # from config (`datasets:` or a bare path as `dataset:`), not from the registry file
    species: str | None = None  # spatial pairs: human | mouse (picks the LR resource's table)
    inputs: dict[str, str] = field(default_factory=dict)  # spatial pairs: role -> resource entry name or a path

    @property
    def download_name(self) -> str:
        """The entry whose download this one uses (itself unless ``source`` names another)."""
        return self.source or self.name

    def provenance(self) -> dict[str, Any]:
        from pertpipe.errors import clean_url

        url = self.urls[0] if self.urls else (Path(self.path).resolve().as_uri() if self.path else None)
        return {"name": self.name, "url": clean_url(url),  # provenance never keeps a credential "sha256": self.sha256,
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
        for kind, section in (("dataset", "datasets"), ("resource", "resources"), ("spatial", "spatial_datasets")):
            for name, spec in (raw.get(section) or {}).items():
                entries[name] = _parse_entry(path, kind, name, spec or {})
        reg = cls(entries, path)
        for e in entries.values():
            if e.source and e.source not in entries:
                raise ConfigError(f"{path}: {e.name}.source names '{e.source}', which is not in the registry. "
                                  f"Fix: use one of {sorted(entries)}")
            for role, ref in e.inputs.items():
                if ref not in entries and os.sep not in ref:
                    raise ConfigError(f"{path}: {e.name}.inputs.{role} names '{ref}', which is not a registry entry. "
                                      f"Fix: use a resource name or a file path")
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

    def with_user_datasets(self, specs: dict[str, Any] | None, *, base_dir: str | os.PathLike = ".",
                           where: str = "config datasets") -> Registry:
        """This registry plus the user's datasets (config ``datasets:``): ``path`` or ``url``, adapter and options.

        ``adapter`` defaults to ``canonical``; a ``url`` without a ``file`` downloads to its basename. A name the
        registry already has is an error (rename the user entry).
        """
        entries = dict(self.entries)
        for name, spec in (specs or {}).items():
            spec = dict(spec or {})
            bad = set(spec) - _USER_KEYS
            if bad:
                raise ConfigError(f"{where}.{name}: unknown field(s) {sorted(bad)}. Fix: use only {sorted(_USER_KEYS)}")
            if name in self.entries:
                raise ConfigError(f"{where}.{name}: the registry {self.path} already has a dataset of that name. "
                                  "Fix: give your dataset another name")
            if not spec.get("path") and not spec.get("url"):
                raise ConfigError(f"{where}.{name}: needs `path` (a local .h5ad) or `url`. Fix: add one")
            spec.setdefault("adapter", "canonical")
            if spec.get("path"):
                local = Path(spec["path"]).expanduser()
                local = local if local.is_absolute() else Path(base_dir) / local
                if not local.is_file():
                    raise ConfigError(f"{where}.{name}.path: {local} does not exist. Fix: give the path of your "
                                      ".h5ad (relative paths are taken from the working directory)")
                spec["path"] = str(local.resolve())
            elif not spec.get("file"):
                from urllib.parse import urlparse

                spec["file"] = Path(urlparse(str(spec["url"])).path).name or f"{name}.h5ad"
            entry = _parse_entry(Path(where), "dataset", name, spec)
            entries[name] = replace(entry, user=True, description=entry.description or f"user dataset ({where})")
        return Registry(entries, self.path)

    def with_user_spatial(self, specs: dict[str, Any] | None, *, base_dir: str | os.PathLike = ".") -> Registry:
        """This registry plus the user's spatial pairs (config ``spatial_datasets:``); input paths must exist."""
        entries = dict(self.entries)
        for name, spec in (specs or {}).items():
            if name in self.entries:
                raise ConfigError(f"config spatial_datasets.{name}: the registry {self.path} already has an entry of "
                                  "that name. Fix: give your pair another name")
            spec = dict(spec or {})
            spec.setdefault("adapter", "h5ad_pair")
            inputs = {}
            for role, ref in dict(spec.get("inputs") or {}).items():
                if ref in self.entries:
                    inputs[role] = ref
                    continue
                local = Path(str(ref)).expanduser()
                local = local if local.is_absolute() else Path(base_dir) / local
                if not local.is_file():
                    raise ConfigError(f"config spatial_datasets.{name}.inputs.{role}: {local} does not exist. Fix: "
                                      "give the path of the file (relative paths are taken from the working directory)")
                inputs[role] = str(local.resolve())
            spec["inputs"] = inputs
            entry = _parse_spatial(Path("config"), name, spec)
            entries[name] = replace(entry, user=True)
        return Registry(entries, self.path)

    def resolve(self, dataset: str, *, base_dir: str | os.PathLike = ".") -> tuple[Registry, str]:
        """(registry, name) for config ``dataset:``: a registry/user name, or a bare path to an ``.h5ad``.

        A bare path becomes a user entry named after the file (canonical adapter: the file needs
        ``obs['target_gene']``; otherwise describe it in ``datasets:``, as ``pertpipe inspect`` suggests).
        """
        if dataset in self.entries:
            self.dataset(dataset)
            return self, dataset
        looks_like_path = dataset.endswith((".h5ad", ".rda", ".RData")) or os.sep in dataset
        if not looks_like_path:
            self.dataset(dataset)  # raises with the list of names
        if not Path(dataset).expanduser().is_file() and not (Path(base_dir) / dataset).is_file():
            raise ConfigError(f"config dataset: '{dataset}' is neither a dataset name nor an existing file. Fix: give "
                              f"the path of your .h5ad, or one of {self.names('dataset')}")
        name = re.sub(r"[^A-Za-z0-9_]+", "_", Path(dataset).name.rsplit(".", 1)[0]).strip("_") or "user"
        if name in self.entries:
            name = f"{name}_file"
        return self.with_user_datasets({name: {"path": dataset}}, base_dir=base_dir, where="config dataset"), name

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
    if kind == "spatial":
        return _parse_spatial(path, name, spec)
    if spec.get("path") and spec.get("url"):
        raise ConfigError(f"{path}: {name}: give `path` (a local file) or `url`, not both")
    if not simulated and not spec.get("source") and not spec.get("path") and spec.get("adapter") != "perturbqa":
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
        licence=spec.get("licence", ""), citation=spec.get("citation", ""), path=spec.get("path"),
    )


SPATIAL_ADAPTERS = ("spacexr_rds", "spacexr_csv", "h5ad_pair")


def _parse_spatial(path: Path, name: str, spec: dict[str, Any]) -> Entry:
    """A spatial pair: ``adapter`` (how to read), ``species``, ``inputs`` (role -> resource entry or path)."""
    where = f"{path}: spatial_datasets.{name}"
    if spec.get("adapter") not in SPATIAL_ADAPTERS:
        raise ConfigError(f"{where}.adapter is {spec.get('adapter')!r}. Fix: use one of {list(SPATIAL_ADAPTERS)}")
    if spec.get("species") not in SPECIES:
        raise ConfigError(f"{where}.species is {spec.get('species')!r}. Fix: use one of {list(SPECIES)}")
    inputs = spec.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise ConfigError(f"{where}: needs `inputs` (role -> resource entry or file path, e.g. spatial: ..., "
                          "scrna: ...). Fix: add them")
    return Entry(name=name, kind="spatial", adapter=spec["adapter"], species=spec["species"],
                 inputs={str(k): str(v) for k, v in inputs.items()},
                 adapter_options=dict(spec.get("adapter_options") or {}), description=spec.get("description", ""),
                 licence=spec.get("licence", ""), citation=spec.get("citation", ""))


def load_registry(path: str | os.PathLike, user_datasets: dict[str, Any] | None = None, *,
                  base_dir: str | os.PathLike = ".") -> Registry:
    """The registry file plus config ``datasets:`` (what rules and scripts both read, so they agree)."""
    return Registry.load(path).with_user_datasets(user_datasets, base_dir=base_dir)
