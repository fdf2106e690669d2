"""LINCS L1000 input: GCT 1.2/1.3 text, GCTX (HDF5) and cmapR's ``GCT`` R object, mapped onto the contract.

cmapPy is unmaintained (it breaks on numpy >= 1.24 / pandas 2), so the formats are read here directly:

* **GCT** (text): line 1 ``#1.3`` (or ``#1.2``), line 2 ``rows cols [row-meta col-meta]``, a header line
  (``id``, row-metadata names, sample ids), one line per column-metadata field (``na`` under the row-meta
  columns), then one line per gene. Small by nature; read whole.
* **GCTX** (HDF5, read with h5py): ``/0/DATA/0/matrix`` is samples x genes, ``/0/META/ROW/*`` and
  ``/0/META/COL/*`` hold ids and metadata. Read **plate by plate** (only that plate's samples in memory), so
  a level-3 GCTX of any size streams; sample metadata may come from a side table (``inst_info``).
* **cmapR** ``GCT`` S4 objects in ``.RData`` (``mat`` genes x samples, ``rdesc``, ``cdesc``), read with ``rdata``.

Contract of a signature dataset (``uns['pertpipe']['standardize']['scale'] == 'zscore'``): X = z-scores
(samples x landmark genes, float32); obs ``target_gene`` (``pert_iname``; vehicle / vector / untreated
controls -> ``non-targeting``), ``cell_type`` (``cell_id``), ``batch`` (plate), ``pert_type``, ``dose``,
``time``, ``condition`` (dose | time); var index = gene symbols. Level 3 (log2 expression) becomes level 4
here: a robust z-score per plate and gene, (x - median) / (1.4826 MAD) over the plate's population (CMap's
reference), the MAD floored, clipped at +-10 like CMap's level 5.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL
from pertpipe.errors import ContractError

log = logging.getLogger(__name__)

L1000_FORMATS = ("gct", "gctx", "gct_rdata")
CONTROL_PERT_TYPES = ("ctl_vehicle", "ctl_vector", "ctl_untrt", "ctl_vehicle.cns", "ctl_vector.cns", "ctl_untrt.cns")
ZSCORE_CLIP = 10.0
MAD_FLOOR = 0.1  # log2 units: a gene that barely varies on a plate does not get an exploding z-score
_MAD_SCALE = 1.4826


@dataclass
class GCT:
    """One GCT dataset: ``mat`` [samples x genes] (float32), ``row_meta`` (genes, index = row id),
    ``col_meta`` (samples, index = column id)."""

    mat: np.ndarray
    row_meta: pd.DataFrame
    col_meta: pd.DataFrame
    source: str = ""


def _decode(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)


def read_gct(path: str | os.PathLike) -> GCT:
    """A GCT 1.2 or 1.3 text file."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        version = fh.readline().strip()
        dims = fh.readline().rstrip("\n").split("\t")
    if version not in ("#1.2", "#1.3"):
        raise ContractError(path, "line 1", f"'{version[:40]}' is not a GCT version line (#1.2 or #1.3)",
                            "give a GCT 1.2/1.3 text file, or set adapter_options.source_format to gctx / gct_rdata")
    try:
        n_rows, n_cols = int(dims[0]), int(dims[1])
        n_rmeta, n_cmeta = (int(dims[2]), int(dims[3])) if version == "#1.3" else (0, 0)
    except (IndexError, ValueError) as exc:
        raise ContractError(path, "line 2", f"dimensions '{' '.join(dims)}' are not 'rows cols [rowmeta colmeta]'",
                            "repair the header or re-export the file") from exc
    if version == "#1.2":
        n_rmeta = 1  # the Description column
    table = pd.read_csv(path, sep="\t", skiprows=2, header=0, dtype=str, keep_default_na=False)
    ids = list(table.columns[1 + n_rmeta:])
    if len(ids) != n_cols or len(table) != n_rows + n_cmeta:
        raise ContractError(path, "header", f"declares {n_rows} rows x {n_cols} samples but holds "
                            f"{len(table) - n_cmeta} x {len(ids)}", "the file is truncated or its header is wrong")
    cmeta = table.iloc[:n_cmeta]
    col_meta = pd.DataFrame({str(r.iloc[0]): r.iloc[1 + n_rmeta:].to_numpy() for _, r in cmeta.iterrows()},
                            index=pd.Index(ids, name="cid"))
    body = table.iloc[n_cmeta:]
    row_meta = body.iloc[:, 1:1 + n_rmeta].copy()
    row_meta.index = pd.Index(body.iloc[:, 0].astype(str).to_numpy(), name="rid")
    try:
        mat = body.iloc[:, 1 + n_rmeta:].to_numpy(dtype=np.float32).T
    except ValueError as exc:
        raise ContractError(path, "data", f"non-numeric expression values ({exc})", "repair the file") from exc
    return GCT(mat, row_meta, _numeric_columns(col_meta), str(path))


def _numeric_columns(df: pd.DataFrame) -> pd.DataFrame:
    for c in df.columns:
        conv = pd.to_numeric(df[c], errors="coerce")
        if conv.notna().all() and len(df):
            df[c] = conv
    return df


def _gctx_meta(group) -> pd.DataFrame:
    ids = _decode(group["id"][:])
    cols = {k: (_decode(group[k][:]) if group[k].dtype.kind in "SOU" else group[k][:]) for k in group if k != "id"}
    return pd.DataFrame(cols, index=pd.Index(ids))


def gctx_meta(path: str | os.PathLike, *, inst_info: str | os.PathLike | None = None) -> tuple[pd.DataFrame,
                                                                                                 pd.DataFrame]:
    """Row and column metadata of a GCTX (columns joined with an ``inst_info`` table by ``inst_id``)."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ContractError(path, "file", f"not an HDF5/GCTX file ({exc})", "give a .gctx file") from exc
    with f:
        for key in ("0/DATA/0/matrix", "0/META/ROW/id", "0/META/COL/id"):
            if key not in f:
                raise ContractError(path, f"/{key}", "missing: not a GCTX layout", "give a CMap GCTX file")
        rows, cols = _gctx_meta(f["0/META/ROW"]), _gctx_meta(f["0/META/COL"])
    if inst_info is not None:
        info = pd.read_csv(inst_info, sep="\t", dtype=str)
        key = "inst_id" if "inst_id" in info.columns else info.columns[0]
        info = info.set_index(key)
        missing = cols.index.difference(info.index)
        if len(missing):
            raise ContractError(inst_info, key, f"{len(missing)} GCTX samples have no row (e.g. {list(missing[:3])})",
                                "give the instance table of this GCTX")
        cols = cols.join(info[[c for c in info.columns if c not in cols.columns]])
    return rows, _numeric_columns(cols)


def read_gctx(path: str | os.PathLike, *, inst_info: str | os.PathLike | None = None,
              samples: np.ndarray | None = None) -> GCT:
    """A GCTX file (optionally only the sample positions ``samples``)."""
    import h5py

    rows, cols = gctx_meta(path, inst_info=inst_info)
    with h5py.File(path, "r") as f:
        m = f["0/DATA/0/matrix"]
        if m.shape != (len(cols), len(rows)):
            raise ContractError(path, "/0/DATA/0/matrix", f"shape {m.shape} != (samples {len(cols)}, genes "
                                f"{len(rows)})", "the file is inconsistent; re-export it")
        if samples is None:
            mat = m[...]
        else:
            order = np.sort(np.asarray(samples))
            mat = m[order, :]
            cols = cols.iloc[order]
    return GCT(np.asarray(mat, dtype=np.float32), rows, cols, str(path))


def read_gct_rdata(path: str | os.PathLike, *, object_name: str | None = None) -> GCT:
    """cmapR's ``GCT`` S4 object saved in an ``.RData``/``.rda`` file (e.g. cmapR's ``ds``)."""
    import rdata

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata has no constructor for the GCT class and says so
        try:
            objects = rdata.read_rda(path)
        except Exception as exc:
            raise ContractError(path, "file", f"not a readable R data file ({type(exc).__name__}: {exc})",
                                "give the original .RData file") from exc
    gcts = [k for k, v in objects.items() if all(hasattr(v, s) for s in ("mat", "rdesc", "cdesc"))]
    name = object_name or (gcts[0] if len(gcts) == 1 else None)
    if name is None or name not in objects:
        raise ContractError(path, "object", f"GCT objects in the file: {gcts} (of {sorted(objects)})",
                            "set adapter_options.rda_object to the one to read")
    g = objects[name]
    mat = np.asarray(g.mat, dtype=np.float32)  # genes x samples
    rid = [str(x) for x in np.asarray(g.rid)] if getattr(g, "rid", None) is not None else None
    cid = [str(x) for x in np.asarray(g.cid)] if getattr(g, "cid", None) is not None else None
    rdesc, cdesc = pd.DataFrame(g.rdesc).copy(), pd.DataFrame(g.cdesc).copy()
    rdesc.index = pd.Index(rid or rdesc.get("id", rdesc.index).astype(str))
    cdesc.index = pd.Index(cid or cdesc.get("id", cdesc.index).astype(str))
    if mat.shape != (len(rdesc), len(cdesc)):
        raise ContractError(path, f"{name}@mat", f"shape {mat.shape} != rdesc {len(rdesc)} x cdesc {len(cdesc)}",
                            "the object is inconsistent")
    for df in (rdesc, cdesc):
        for c in df.columns:
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                df[c] = df[c].astype(str)
    return GCT(mat.T.copy(), rdesc, cdesc, f"{path}:{name}")


def read_any(path: str | os.PathLike, fmt: str, *, inst_info: str | os.PathLike | None = None,
             object_name: str | None = None) -> GCT:
    if not Path(path).exists():
        raise ContractError(path, "file", "no such file", "check the dataset's path/url in config or the registry")
    if fmt == "gct":
        return read_gct(path)
    if fmt == "gctx":
        return read_gctx(path, inst_info=inst_info)
    if fmt == "gct_rdata":
        return read_gct_rdata(path, object_name=object_name)
    raise ContractError(path, "adapter_options.source_format", f"'{fmt}' is not an L1000 format",
                        f"use one of {list(L1000_FORMATS)}")


# -- metadata -> contract ---------------------------------------------------------------------------------
def _first(meta: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in meta.columns), None)


def _with_unit(meta: pd.DataFrame, value: str, unit: str, fallback: str) -> np.ndarray:
    """``10 uM``-style strings from CMap's pert_idose/pert_itime, or value + unit; CMap's -666 (missing) -> NA."""
    col = _first(meta, (fallback,))
    if col:
        out = meta[col].astype(str).str.replace("\u00b5", "u").str.replace("<b5>", "u")
    elif value in meta.columns:
        units = meta[unit].astype(str) if unit in meta.columns else ""
        out = (meta[value].astype(str) + " " + units).str.strip()
    else:
        return np.full(len(meta), "NA", dtype=object)
    return np.where(out.str.contains("-666", regex=False), "NA", out).astype(object)


def contract_obs(col_meta: pd.DataFrame, *, path: object, control_values: tuple[str, ...] = ("DMSO", "PBS", "H2O",
                 "UnTrt", "EMPTY_VECTOR", "GFP", "pgw", "LUCIFERASE", "RFP"), pert_col: str = "pert_iname",
                 cell_col: str | None = "cell_id", batch_col: str | None = "rna_plate",
                 cell_type: str | None = None) -> pd.DataFrame:
    """Column metadata -> obs of the contract (see the module docstring); the named columns first, then CMap's
    usual alternatives. ``cell_type``: one context for every sample (a one-line plate without a cell column)."""
    fields = [str(c) for c in col_meta.columns][:20]
    pert = _first(col_meta, (pert_col, "pert_iname", "pert_desc", "pert_id"))
    if pert is None:
        raise ContractError(path, "column metadata 'pert_iname'", f"missing (fields: {fields})",
                            "give sample metadata with pert_iname (for a GCTX: adapter_options.inst_info)")
    cell = _first(col_meta, tuple(c for c in (cell_col, "cell_id", "cell_iname") if c))
    if cell is None and not cell_type:
        raise ContractError(path, "column metadata 'cell_id'", f"missing (fields: {fields})",
                            "give sample metadata with cell_id, or, for a file of one cell line, name it: "
                            "`adapter_options: {cell_type: <the cell line>}`")
    if cell is not None and cell_type and col_meta[cell].astype(str).nunique() > 1:
        lines = sorted(col_meta[cell].astype(str).unique())
        raise ContractError(path, f"column metadata '{cell}'", f"holds {len(lines)} cell lines ({lines[:5]}), but "
                            f"adapter_options.cell_type '{cell_type}' would give every sample one context",
                            "remove adapter_options.cell_type (it is for files of one cell line without a cell column)")
    target = col_meta[pert].astype(str).str.strip()
    is_ctrl = target.isin(control_values)
    if "pert_type" in col_meta.columns:
        is_ctrl |= col_meta["pert_type"].astype(str).isin(CONTROL_PERT_TYPES)
    plate = _first(col_meta, tuple(c for c in (batch_col, "rna_plate", "det_plate", "brew_prefix") if c))
    ids = [str(i) for i in col_meta.index]
    if plate:
        batch = col_meta[plate].astype(str).to_numpy()
    else:  # CMap's sample ids are <plate>:<well>; ids without a plate are one plate
        batch = np.array([i.split(":")[0] if ":" in i else "plate0" for i in ids], dtype=object)
    obs = pd.DataFrame(index=pd.Index([str(i) for i in col_meta.index]))
    obs["target_gene"] = np.where(is_ctrl.to_numpy(), CONTROL_LABEL, target.to_numpy())
    obs["cell_type"] = str(cell_type) if cell_type else col_meta[cell].astype(str).to_numpy()
    obs["batch"] = batch
    obs["pert_type"] = col_meta["pert_type"].astype(str).to_numpy() if "pert_type" in col_meta else "NA"
    obs["dose"] = _with_unit(col_meta, "pert_dose", "pert_dose_unit", "pert_idose")
    obs["time"] = _with_unit(col_meta, "pert_time", "pert_time_unit", "pert_itime")
    obs["condition"] = obs["dose"].astype(str) + " | " + obs["time"].astype(str)
    return obs


def landmark_symbols(row_meta: pd.DataFrame, *, path: object, landmarks: pd.DataFrame | None = None,
                     landmarks_only: bool = True) -> tuple[np.ndarray, list[str]]:
    """Positions of the genes to keep and their symbols.

    Rows carry symbols (``pr_gene_symbol``) and a landmark flag (``pr_is_lmark`` Y/N or ``is_lm``), or only ids
    (a bare GCTX: Entrez ids), mapped through ``landmarks`` (the row metadata of a GCT that has them).
    """
    ids = pd.Index([str(i) for i in row_meta.index])
    if "pr_gene_symbol" in row_meta.columns:
        sym = row_meta["pr_gene_symbol"].astype(str).to_numpy()
        flag = _first(row_meta, ("pr_is_lmark", "is_lm"))
        lm = (row_meta[flag].astype(str).isin(["Y", "1", "TRUE", "True", "1.0"]).to_numpy() if flag
              else np.ones(len(ids), dtype=bool))
    elif landmarks is not None:
        lm_ids = (landmarks["pr_gene_id"].astype(str) if "pr_gene_id" in landmarks.columns else
                  pd.Series(landmarks.index.astype(str), index=landmarks.index))
        sym_of = dict(zip(lm_ids, landmarks["pr_gene_symbol"].astype(str)))
        sym = np.array([sym_of.get(i, i) for i in ids], dtype=object)
        lm = np.array([i in sym_of for i in ids])
    else:
        raise ContractError(path, "row metadata 'pr_gene_symbol'", "missing: the rows are bare ids",
                            "set adapter_options.landmarks to a GCT whose rows carry pr_gene_id and pr_gene_symbol "
                            "(the registry's l1000_landmarks)")
    keep = np.flatnonzero(lm) if landmarks_only else np.arange(len(ids))
    if len(keep) == 0:
        raise ContractError(path, "rows", "no landmark gene found", "set adapter_options.landmarks_only: false")
    return keep, [str(s) for s in sym[keep]]


def robust_zscore(x: np.ndarray, *, mad_floor: float = MAD_FLOOR, clip: float = ZSCORE_CLIP,
                  reference: np.ndarray | None = None) -> np.ndarray:
    """Per-gene robust z-score of samples ``x`` [samples x genes] against ``reference`` rows (default: all)."""
    ref = x if reference is None else x[reference]
    med = np.median(ref, axis=0)
    mad = _MAD_SCALE * np.median(np.abs(ref - med), axis=0)
    z = (x - med) / np.maximum(mad, mad_floor)
    return np.clip(z, -clip, clip).astype(np.float32)


def level4_by_plate(mat: np.ndarray, obs: pd.DataFrame, *, reference: str = "plate",
                    mad_floor: float = MAD_FLOOR) -> np.ndarray:
    """Level 3 -> level 4: robust z-scores per plate (``obs['batch']``), against the plate population or
    (``reference: vehicle``) the plate's control wells."""
    out = np.empty_like(mat, dtype=np.float32)
    for _plate, idx in obs.groupby("batch", observed=True).indices.items():
        ref = None
        if reference == "vehicle":
            ref = np.flatnonzero((obs["target_gene"].to_numpy()[idx] == CONTROL_LABEL))
            if len(ref) < 3:
                raise ContractError(obs.index[idx[0]], "obs['batch']", f"plate {_plate}: {len(ref)} control wells; "
                                    "a vehicle reference needs >= 3", "use zscore_reference: plate")
        out[idx] = robust_zscore(mat[idx], mad_floor=mad_floor, reference=ref)
    return out


def _blocks(src: Path, adapter: Any, landmarks: pd.DataFrame | None):
    """(source label, row metadata, column metadata, iterator of sample-position blocks, reader of a block).

    A GCTX is read one plate at a time (only that plate's samples in memory); GCT text and R objects whole.
    """
    if adapter.source_format == "gctx":
        import h5py

        rows, cols = gctx_meta(src, inst_info=adapter.inst_info)

        def read(pos: np.ndarray) -> np.ndarray:
            with h5py.File(src, "r") as f:
                return np.asarray(f["0/DATA/0/matrix"][np.sort(pos), :], dtype=np.float32)
        return str(src), rows, cols, read
    g = read_any(src, adapter.source_format, inst_info=adapter.inst_info, object_name=adapter.rda_object)
    return g.source, g.row_meta, g.col_meta, lambda pos: g.mat[np.sort(pos)]


def standardize_l1000(src: str | os.PathLike, dest: str | os.PathLike, *, adapter: Any,
                      obs_filter: dict[str, list[str]] | None = None, uns: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """Read an L1000 source and write the signature contract h5ad at ``dest`` (samples grouped by plate; a
    GCTX streams plate by plate); returns summary figures."""
    import scipy.sparse as sp

    from pertpipe.core.h5io import H5adWriter

    src = Path(src)
    if not src.exists():
        raise ContractError(src, "file", "no such file", "check the dataset's path/url in config or the registry")
    landmarks = read_gct(adapter.landmarks).row_meta if adapter.landmarks else None
    label, row_meta, col_meta, read = _blocks(src, adapter, landmarks)
    obs_all = contract_obs(col_meta, path=src, control_values=tuple(adapter.control_values),
                           pert_col=adapter.pert_col, cell_col=adapter.cell_type_col, batch_col=adapter.batch_col,
                           cell_type=adapter.cell_type)
    keep = np.ones(len(obs_all), dtype=bool)
    for col, values in (obs_filter or {}).items():
        meta = col_meta[col] if col in col_meta.columns else obs_all.get(col)
        if meta is None:
            raise ContractError(src, f"column metadata '{col}'", "named by the dataset's filter but absent",
                                f"filter on one of {sorted(set(col_meta.columns) | set(obs_all.columns))}")
        keep &= pd.Series(meta).astype(str).isin([str(v) for v in values]).to_numpy()
    if not keep.any():
        raise ContractError(src, "filter", f"no sample passes {obs_filter}", "check the filter values")
    genes_at, symbols = landmark_symbols(row_meta, path=src, landmarks=landmarks, landmarks_only=adapter.landmarks_only)
    dup = pd.Index(symbols).duplicated()
    genes_at = genes_at[~dup]
    var = pd.DataFrame(index=pd.Index(np.array(symbols, dtype=object)[~dup]))
    plates = obs_all["batch"].to_numpy()
    order = [np.flatnonzero(plates == p) for p in pd.unique(plates)]  # whole plates (z needs the population)
    level = adapter.level
    first = read(order[0])[:, genes_at]
    if level == "auto":
        level = 5 if first.min() < 0 else 3
    level = int(level)
    how = (f"level 3 -> level 4 robust z per plate (reference {adapter.zscore_reference}, MAD floor {MAD_FLOOR})"
           if level == 3 else f"level {level} z-scores as given (clipped at +-{ZSCORE_CLIP:g})")
    obs = pd.concat([obs_all.iloc[idx][keep[idx]] for idx in order])
    meta = dict(uns or {})
    meta.setdefault("pertpipe", {})["standardize"] = {"scale": "zscore", "level_in": level, "values": how,
                                                      "source": label}
    x_max = 0.0
    with H5adWriter(dest, obs=obs, var=var, uns=meta) as w:
        for i, idx in enumerate(order):
            mat = first if i == 0 else read(idx)[:, genes_at]
            if not np.isfinite(mat).all():
                raise ContractError(src, "data", f"{int((~np.isfinite(mat)).sum())} NaN/inf values on plate "
                                    f"{plates[idx[0]]}", "remove them")
            if level == 3:
                z = level4_by_plate(mat, obs_all.iloc[idx], reference=adapter.zscore_reference)
            else:
                z = np.clip(mat, -ZSCORE_CLIP, ZSCORE_CLIP).astype(np.float32)
            z = z[keep[idx]]
            x_max = max(x_max, float(np.abs(z).max()) if z.size else 0.0)
            w.append(sp.csr_matrix(z))
    n_ctrl = int((obs["target_gene"] == CONTROL_LABEL).sum())
    return {"source": label, "n_cells_source": int(len(keep)), "n_cells": int(keep.sum()), "n_genes": int(len(var)),
            "scale_detected": "zscore", "values": how, "level_in": level, "n_control_cells": n_ctrl,
            "n_perturbations": int(obs.loc[obs.target_gene != CONTROL_LABEL, "target_gene"].nunique()),
            "n_contexts": int(obs["cell_type"].nunique()), "n_plates": len(order),
            "duplicate_genes_dropped": int(dup.sum()), "excluded_cells": 0, "empty_cells": 0, "counts_layer": False,
            "filter": obs_filter or {}, "x_max": x_max}
