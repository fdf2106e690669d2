"""Adapters: map a source's obs/var conventions onto the canonical contract.

An adapter knows where a source keeps the perturbation, its control labels, cell type, batch and gene
symbols. Adding a source format is one registered subclass (or one ``adapter_options`` block in the
registry for a source that only differs in column names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pertpipe import COMBO_SEP, CONTROL_LABEL
from pertpipe.errors import ConfigError, ContractError

ADAPTERS: dict[str, type[Adapter]] = {}


def register_adapter(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    def deco(cls: type[Adapter]) -> type[Adapter]:
        cls.name = name
        ADAPTERS[name] = cls
        return cls
    return deco


def get_adapter(name: str, options: dict[str, Any] | None = None) -> Adapter:
    """The adapter registered as ``name``, with ``options`` (from the registry) overriding its defaults."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter '{name}'. Fix: use one of {sorted(ADAPTERS)} in resources/datasets.yaml")
    adapter = ADAPTERS[name]()
    if options:
        valid = {f.name for f in fields(adapter)}
        bad = set(options) - valid
        if bad:
            raise ConfigError(f"adapter '{name}': unknown adapter_options {sorted(bad)}. Fix: use {sorted(valid)}")
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        adapter = replace(adapter, **opts)
    return adapter


@dataclass(frozen=True)
class Adapter:
    """Column conventions of one source format; subclasses override :meth:`map_targets` for odd labels."""

    name: ClassVar[str] = "base"
    pert_col: str = "target_gene"
    control_values: tuple[str, ...] = (CONTROL_LABEL, "control", "ctrl", "NT", "non_targeting", "Non-Targeting",
                                       "nontargeting", "negative_control")
    combo_sep: str = "+"
    cell_type_col: str | None = "cell_type"
    batch_col: str | None = "batch"
    gene_col: str | None = None  # var column with symbols; None = var index
    default_cell_type: str = "unknown"
    default_batch: str = "batch0"
    keep_obs: tuple[str, ...] = field(default_factory=tuple)
    # labels that mark cells without a usable perturbation (dropped by standardize and counted)
    exclude_values: tuple[str, ...] = ("unassigned", "multiplet", "doublet", "ambiguous")
    # the file itself: h5ad, or an R object read by pertpipe.data.sources (rda_object: which list in it)
    source_format: str = "h5ad"
    rda_object: str | None = None
    # guide-level input: obsm key of a cells x guides UMI matrix; uns keys naming each guide and its target
    guide_obsm: str | None = None
    guide_names: str = "grna_ids"
    guide_targets: str = "grna_targets"
    guide_min_umi: float = 5
    guide_min_fraction: float = 0.8

    # -- obs ---------------------------------------------------------------------------------------
    def map_targets(self, values: pd.Series) -> pd.Series:
        """Source perturbation labels -> canonical ``target_gene`` (controls -> ``non-targeting``)."""
        controls = set(self.control_values)

        def one(label: str) -> str:
            label = str(label).strip()
            if label in controls:
                return CONTROL_LABEL
            parts = [x.strip() for x in label.split(self.combo_sep) if x.strip() and x.strip() not in controls]
            return COMBO_SEP.join(parts) if parts else CONTROL_LABEL

        uniq = pd.unique(values.astype(str))
        mapping = {u: one(u) for u in uniq}
        return values.astype(str).map(mapping)

    def obs_problems(self, obs: pd.DataFrame, *, duplicate_cells: str = "error") -> list[tuple[str, str, str]]:
        """Every problem of ``obs`` that stage 1 refuses, as (field, problem, fix) in the words ``standardize``
        raises and ``pertpipe inspect`` warns with: unlabelled cells, no controls, no perturbed cells, labels with
        control characters (a line break would split report lines), duplicated cell barcodes."""
        col, out = f"obs['{self.pert_col}']", []
        raw = obs[self.pert_col]
        missing = raw.isna() | (raw.astype(str).str.strip().isin(["", "nan", "None"]))
        if missing.any():
            out.append((col, f"{int(missing.sum())} cells have no perturbation label (first: "
                        f"{list(obs.index[missing][:5])})", "label them (controls as 'non-targeting') or drop them"))
        mapped = pd.Series(self.map_targets(raw[~missing]).values) if (~missing).any() else pd.Series([], dtype=str)
        if not (mapped == CONTROL_LABEL).any():
            seen = sorted(pd.unique(raw[~missing].astype(str)))[:10]
            out.append((col, f"no control cells: none of the labels {list(self.control_values)} occur (labels seen: "
                        f"{seen} ...)", "set `adapter_options: {control_values: [<the control label>]}` for this "
                        "dataset (config `datasets:` block or resources/datasets.yaml)"))
        elif not (mapped != CONTROL_LABEL).any():
            out.append((col, "no perturbed cells: every labelled cell is a control, so there is nothing to predict "
                        "or score", "check adapter_options.pert_col and control_values "
                        "(`pertpipe inspect FILE` lists each column's labels), or add the perturbed cells"))
        for c in [self.pert_col, self.cell_type_col, self.batch_col]:
            if c and c in obs.columns:
                bad = obs[c].astype(str).str.contains(r"[\x00-\x1f\x7f]", regex=True, na=False)
                if bad.any():
                    out.append((f"obs['{c}']", f"{int(bad.sum())} labels contain control characters (line breaks, "
                                f"tabs; first: {obs[c][bad].astype(str).iloc[0]!r})", "remove them from the labels"))
        dup = pd.Index(obs.index.astype(str)).duplicated()
        if dup.any() and duplicate_cells == "error":
            out.append(("obs_names", f"{int(dup.sum())} duplicated cell barcodes (e.g. "
                        f"{sorted(set(obs.index.astype(str)[dup]))[:3]}): a barcode could land in both train and "
                        "validation", "make them unique in the source (e.g. append the sample or lane), or set "
                        "stage1.duplicate_cells: make_unique"))
        return out

    def canonical_obs(self, obs: pd.DataFrame, *, path: object, duplicate_cells: str = "error") -> pd.DataFrame:
        """The canonical obs table (target_gene, batch, cell_type + kept columns), validated: the first of
        :meth:`obs_problems` is raised. ``duplicate_cells: make_unique`` renames repeated barcodes (-1, -2, ...)."""
        if self.pert_col not in obs.columns:
            raise ContractError(path, f"obs['{self.pert_col}']",
                                f"perturbation column missing (obs has {_columns_with_levels(obs)})",
                                "set `adapter_options: {pert_col: <one of those columns>}` for this dataset (config "
                                "`datasets:` block or resources/datasets.yaml; `pertpipe inspect FILE` suggests it), "
                                "or `guide_obsm:` when the file holds gRNA counts instead of labels")
        self.check_columns(obs, path=path)
        problems = self.obs_problems(obs, duplicate_cells=duplicate_cells)
        if problems:
            raise ContractError(path, *problems[0])
        raw = obs[self.pert_col]
        index = pd.Index(obs.index.astype(str))
        if index.duplicated().any():  # duplicate_cells: make_unique (counted by standardize)
            index = _make_unique(index)
        out = pd.DataFrame(index=index)
        out["target_gene"] = self.map_targets(raw).values
        out["batch"] = self._column(obs, self.batch_col, self.default_batch)
        out["cell_type"] = self._column(obs, self.cell_type_col, self.default_cell_type)
        for col in self.keep_obs:
            if col in obs.columns:
                out[col] = obs[col].values
        return out

    def check_columns(self, obs: pd.DataFrame, *, path: object) -> None:
        """Named cell-type / batch columns must exist (a silent default would merge every context into one)."""
        for opt in ("cell_type_col", "batch_col"):
            col = getattr(self, opt)
            if col and col not in obs.columns and col != getattr(type(self), opt):
                raise ContractError(path, f"obs['{col}']", f"adapter_options.{opt} names a missing column (obs has "
                                    f"{_columns_with_levels(obs)})", f"set `adapter_options: {{{opt}: <column>}}` "
                                    "to one of those, or null for a single value")

    @staticmethod
    def _column(obs: pd.DataFrame, col: str | None, default: str) -> np.ndarray:
        if col and col in obs.columns:
            return obs[col].astype(str).values
        return np.full(len(obs), default, dtype=object)

    # -- var ---------------------------------------------------------------------------------------
    def gene_symbols(self, var: pd.DataFrame, *, path: object) -> pd.Index:
        if self.gene_col is None:
            names = var.index
        elif self.gene_col in var.columns:
            names = pd.Index(var[self.gene_col].astype(str))
        else:
            raise ContractError(path, f"var['{self.gene_col}']", f"gene symbol column missing (var has "
                                f"{[str(c) for c in var.columns]})", "set adapter_options.gene_col (null = var index)")
        return pd.Index([str(x).strip() for x in names])


def _make_unique(index: pd.Index) -> pd.Index:
    """Repeated names get -1, -2, ... (the first keeps its name), as anndata's obs_names_make_unique."""
    seen: dict[str, int] = {}
    out = []
    for name in index:
        k = seen.get(name, 0)
        out.append(name if k == 0 else f"{name}-{k}")
        seen[name] = k + 1
    return pd.Index(out)


def _columns_with_levels(obs: pd.DataFrame, limit: int = 20) -> str:
    """``col (n distinct)`` for the first ``limit`` obs columns: what a message shows of a file's obs."""
    parts = [f"{c} ({obs[c].nunique()} distinct)" for c in list(obs.columns)[:limit]]
    return ", ".join(parts) + (" ..." if obs.shape[1] > limit else "") if parts else "no columns"


@register_adapter("canonical")
@dataclass(frozen=True)
class CanonicalAdapter(Adapter):
    """Already canonical (the demo, VCC-style files): ``target_gene``, ``batch``, ``cell_type``."""


@register_adapter("vcc")
@dataclass(frozen=True)
class VCCAdapter(Adapter):
    """VCC 2025 training h5ad: ``target_gene`` with ``non-targeting``, ``batch``; one cell line (H1)."""

    default_cell_type: str = "H1"


@register_adapter("perturbench")
@dataclass(frozen=True)
class PerturbenchAdapter(Adapter):
    """perturbench / scPerturb-like: ``perturbation`` with ``control``; ``+`` joins doubles."""

    pert_col: str = "perturbation"
    batch_col: str | None = "dataset"
    keep_obs: tuple[str, ...] = ("perturbation_raw", "dataset", "perturbation_type")


@register_adapter("scperturb")
@dataclass(frozen=True)
class ScPerturbAdapter(Adapter):
    """scPerturb harmonised files: ``perturbation`` (``control``), ``celltype``; symbols in the var index."""

    pert_col: str = "perturbation"
    cell_type_col: str | None = "celltype"
    batch_col: str | None = "gem_group"
    combo_sep: str = "_"


@register_adapter("gears")
@dataclass(frozen=True)
class GearsAdapter(Adapter):
    """GEARS ``perturb_processed.h5ad``: ``condition`` as ``A+ctrl`` / ``A+B`` / ``ctrl``; symbols in ``gene_name``."""

    pert_col: str = "condition"
    cell_type_col: str | None = "cell_type"
    batch_col: str | None = None
    gene_col: str | None = "gene_name"


@register_adapter("sceptre")
@dataclass(frozen=True)
class SceptreAdapter(Adapter):
    """sceptre-style R list (``.rda``): gene × cell counts + gRNA × cell counts, cells assigned by their top guide.

    Papalexi 2021 ECCITE-seq (THP-1, one context; replicates ``bio_rep`` as batch).
    """

    source_format: str = "sceptre_rda"
    guide_obsm: str | None = "grna_counts"
    cell_type_col: str | None = None
    batch_col: str | None = "bio_rep"
    default_cell_type: str = "THP-1"


@register_adapter("l1000")
@dataclass(frozen=True)
class L1000Adapter(Adapter):
    """LINCS L1000 signatures (:mod:`pertpipe.data.l1000`): GCT text, GCTX (+ an ``inst_info`` table), or cmapR's
    ``GCT`` object in an ``.RData``. ``pert_iname`` -> target, ``cell_id`` -> context, plate -> batch; vehicle /
    vector controls -> ``non-targeting``. ``level``: 3 (log2 expression, made level-4 robust z per plate), 4/5
    (z-scores as given) or auto (negative values = z-scores). ``landmarks``: a GCT whose rows map bare ids to
    symbols (a GCTX without row metadata). ``cell_type``: the one context of a file without a cell column (a
    one-line plate)."""

    source_format: str = "gct"
    pert_col: str = "pert_iname"
    cell_type_col: str | None = "cell_id"
    batch_col: str | None = "rna_plate"
    control_values: tuple[str, ...] = ("DMSO", "PBS", "H2O", "UnTrt", "EMPTY_VECTOR", "GFP", "pgw", "LUCIFERASE",
                                       "RFP")
    level: str | int = "auto"
    zscore_reference: str = "plate"
    landmarks: str | None = None
    landmarks_only: bool = True
    inst_info: str | None = None
    cell_type: str | None = None
