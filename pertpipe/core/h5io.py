"""Chunked h5ad reading and writing, so stage 1 memory follows the chunk size, not the dataset.

``H5adReader`` streams row blocks of ``X`` (CSR or dense on disk) or a layer as scipy CSR matrices;
``H5adWriter`` appends CSR row blocks to a new h5ad written in anndata's on-disk encoding, under a
temporary name that is renamed into place only when the file is complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, write_elem

from pertpipe.errors import ContractError

CARRIED_OBSM = ("spatial",)  # obsm entries stage 1 keeps (spatial coordinates, read by CFM-VC's context)
DEFAULT_CHUNK = 10_000  # cells per chunk where a caller gives none (stage1.chunk_size in the pipeline)
_DATA_CHUNK = 1 << 18  # elements per HDF5 chunk of data/indices (1 MiB of float32)


class H5adReader:
    """Open an h5ad file for chunked access to ``X`` and its layers; obs/var are read eagerly (small)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            short = "truncated" in str(exc).lower() or "eof" in str(exc).lower()
            what = "cut short (a truncated copy or download)" if short else "not a readable HDF5/h5ad file"
            raise ContractError(self.path, "file", f"{what} ({str(exc).splitlines()[0][:160]})",
                                "your own file: write or copy it again from its source (check the copy finished); a "
                                "file the pipeline downloaded or wrote: delete it and re-run the rule that makes it"
                                ) from exc
        if "X" not in self._f:
            raise ContractError(self.path, "X", "the file has no X matrix", "write the expression matrix to X")
        self.obs: pd.DataFrame = read_elem(self._f["obs"])
        self.var: pd.DataFrame = read_elem(self._f["var"])
        self.n_obs, self.n_vars = len(self.obs), len(self.var)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> H5adReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()

    # -- metadata ----------------------------------------------------------------------------------
    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    def uns(self) -> dict[str, Any]:
        return read_elem(self._f["uns"]) if "uns" in self._f else {}

    def layers(self) -> list[str]:
        return list(self._f["layers"].keys()) if "layers" in self._f else []

    def obsm_keys(self) -> list[str]:
        return list(self._f["obsm"].keys()) if "obsm" in self._f else []

    def carried_obsm(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The per-cell matrices stage 1 carries through (``obsm["spatial"]``), subset to boolean ``rows``."""
        out = {}
        for key in CARRIED_OBSM:
            if key in self.obsm_keys():
                value = self.obsm(key).astype(np.float32)
                if not np.isfinite(value).all():
                    raise ContractError(self.path, f"obsm['{key}']", "NaN or infinite coordinates",
                                        "fill or drop those cells before stage 1")
                out[key] = value if rows is None else value[rows]
        return out

    def obsm(self, key: str) -> np.ndarray:
        """``obsm[key]`` as a dense array (per-cell embeddings or coordinates: small next to X)."""
        if key not in self.obsm_keys():
            raise ContractError(self.path, f"obsm['{key}']", "missing", f"available: {self.obsm_keys()}")
        value = read_elem(self._f["obsm"][key])
        value = value.to_numpy() if isinstance(value, pd.DataFrame) else value
        value = value.toarray() if sp.issparse(value) else np.asarray(value)
        if value.shape[0] != self.n_obs:
            raise ContractError(self.path, f"obsm['{key}']", f"{value.shape[0]} rows for {self.n_obs} cells",
                                "write one row per cell")
        return value

    def _elem(self, layer: str | None) -> h5py.Group | h5py.Dataset:
        if layer is None:
            return self._f["X"]
        if layer == "raw/X":
            return self._f["raw/X"]
        if layer not in self.layers():
            raise ContractError(self.path, f"layers['{layer}']", "layer missing", f"available layers: {self.layers()}")
        return self._f["layers"][layer]

    def encoding(self, layer: str | None = None) -> str:
        """``csr_matrix``, ``csc_matrix`` or ``array`` (dense)."""
        elem = self._elem(layer)
        if isinstance(elem, h5py.Dataset):
            return "array"
        enc = elem.attrs.get("encoding-type", "")
        return enc.decode() if isinstance(enc, bytes) else str(enc)

    def dtype(self, layer: str | None = None) -> np.dtype:
        elem = self._elem(layer)
        return elem.dtype if isinstance(elem, h5py.Dataset) else elem["data"].dtype

    def nnz(self, layer: str | None = None) -> int:
        elem = self._elem(layer)
        return int(np.prod(elem.shape)) if isinstance(elem, h5py.Dataset) else int(elem["data"].shape[0])

    # -- data --------------------------------------------------------------------------------------
    def read_rows(self, start: int, stop: int, layer: str | None = None) -> sp.csr_matrix:
        """Rows ``[start, stop)`` of X (or ``layer``) as CSR, reading only those rows from disk."""
        elem = self._elem(layer)
        enc = self.encoding(layer)
        if enc == "array":
            return dense_to_csr(np.asarray(elem[start:stop]))
        if enc != "csr_matrix":
            raise ContractError(self.path, "X" if layer is None else f"layers['{layer}']",
                                f"stored as {enc}; chunked row access needs CSR",
                                "convert once with `adata.X = scipy.sparse.csr_matrix(adata.X)` and re-save")
        indptr = elem["indptr"][start:stop + 1].astype(np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        data = elem["data"][lo:hi]
        indices = elem["indices"][lo:hi]
        shape = (stop - start, self.n_vars)
        return sp.csr_matrix((data, indices, indptr - lo), shape=shape)

    def iter_chunks(self, chunk_size: int, layer: str | None = None,
                    rows: np.ndarray | None = None) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """Yield ``(start, stop, csr_block)`` over all rows; with ``rows`` (a boolean mask), only those rows."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        for start in range(0, self.n_obs, chunk_size):
            stop = min(start + chunk_size, self.n_obs)
            block = self.read_rows(start, stop, layer)
            if rows is not None:
                block = block[np.flatnonzero(rows[start:stop])]
            yield start, stop, block


    def read_masked(self, rows: np.ndarray | None = None, *, layer: str | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> sp.csr_matrix:
        """The rows selected by boolean mask ``rows`` (all rows when None) of X or ``layer`` as one CSR, read
        chunk by chunk (memory: the selected rows plus one chunk)."""
        blocks = [b for _s, _e, b in self.iter_chunks(chunk_size, layer, rows)]
        if not blocks:
            return sp.csr_matrix((0, self.n_vars), dtype=self.dtype(layer))
        return sp.vstack(blocks).tocsr()


def dense_to_csr(block: np.ndarray, *, rows_per_step: int = 256) -> sp.csr_matrix:
    """CSR of a dense block (zeros dropped) built into preallocated arrays a few rows at a time: the dense block
    plus the CSR (scipy's conversion goes through int64 COO, ~20 bytes an entry, twice the dense block again)."""
    block = np.asarray(block)
    if block.ndim != 2:
        raise ValueError(f"dense_to_csr needs a 2-d block, got shape {block.shape}")
    counts = np.count_nonzero(block, axis=1)
    indptr = np.zeros(len(block) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    index_dtype = np.int32 if block.shape[1] < 2**31 else np.int64
    data = np.empty(int(indptr[-1]), block.dtype)
    indices = np.empty(int(indptr[-1]), index_dtype)
    for a in range(0, len(block), rows_per_step):
        sub = block[a:a + rows_per_step]
        r, c = np.nonzero(sub)
        lo, hi = indptr[a], indptr[min(a + rows_per_step, len(block))]
        data[lo:hi] = sub[r, c]
        indices[lo:hi] = c
    return sp.csr_matrix((data, indices, indptr), shape=block.shape)


class RowReader:
    """Rows of an h5ad matrix (``X`` or a layer) read from disk on demand: ``reader[idx]`` is a CSR of those
    rows, in the order given (repeats allowed).

    With ``rows`` (file row numbers) the reader shows only those rows, renumbered 0..len(rows)-1: the training
    cells a model kept, the control cells predictions start from. ``transform="log1p"`` returns log1p of the
    stored values (count layers read as encoder input). Memory: the row pointers (8 bytes per file row),
    HDF5's chunk cache (``cache_mb`` per dataset, the bounded cache) and the rows asked for; never the matrix.
    Nearby rows are read in one slice (gaps of fewer than ``gap`` stored entries are read and dropped).
    """

    def __init__(self, path: str | os.PathLike, layer: str | None = None, *, rows: np.ndarray | None = None,
                 transform: str | None = None, cache_mb: int = 64, gap: int = 1 << 16) -> None:
        if transform not in (None, "log1p"):
            raise ValueError(f"RowReader transform must be None or 'log1p', not {transform!r}")
        self.path, self.layer, self.transform, self.gap = Path(path), layer, transform, int(gap)
        with H5adReader(path) as r:
            self.n_file, self.n_vars = r.n_obs, r.n_vars
            self.encoding = r.encoding(layer)
            if self.encoding not in ("csr_matrix", "array"):
                r.read_rows(0, 0, layer)  # raises the ContractError that names the fix
        self._f = h5py.File(self.path, "r", rdcc_nbytes=int(cache_mb) << 20, rdcc_nslots=10007)
        elem = self._f["X"] if layer is None else (self._f[layer] if layer == "raw/X" else self._f["layers"][layer])
        self._elem = elem
        self.dtype = np.dtype(np.float32) if transform else (
            elem.dtype if isinstance(elem, h5py.Dataset) else elem["data"].dtype)
        self.indptr = elem["indptr"][:].astype(np.int64) if self.encoding == "csr_matrix" else None
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows is not None and len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= self.n_file):
            raise IndexError(f"{self.path}: row numbers outside 0..{self.n_file - 1}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_file if self.rows is None else len(self.rows), self.n_vars)

    def __len__(self) -> int:
        return self.shape[0]

    def row_nnz(self) -> np.ndarray:
        """Stored entries per (shown) row."""
        counts = np.diff(self.indptr) if self.indptr is not None else np.full(self.n_file, self.n_vars)
        return counts if self.rows is None else counts[self.rows]

    def __getitem__(self, idx) -> sp.csr_matrix:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        idx = np.atleast_1d(np.asarray(idx))
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        idx = np.where(idx < 0, idx + len(self), idx)
        file_rows = idx if self.rows is None else self.rows[idx]
        uniq, inverse = np.unique(file_rows, return_inverse=True)
        block = self._read_sorted(uniq)
        out = block if len(uniq) == len(file_rows) and np.array_equal(uniq, file_rows) else block[inverse]
        if self.transform == "log1p":
            out = out.astype(np.float32)
            np.log1p(out.data, out=out.data)
        return out

    def dense(self, idx) -> np.ndarray:
        """Rows of a dense-stored ('array') matrix as an ndarray, in the order given: for dense data half the
        memory of a CSR and no conversion (the scorer reads predicted cells this way)."""
        if self.encoding != "array":
            raise ValueError(f"{self.path}: RowReader.dense reads dense-stored matrices; this one is {self.encoding}")
        idx = np.atleast_1d(np.asarray(idx)).astype(np.int64)
        file_rows = idx if self.rows is None else self.rows[idx]
        uniq, inverse = np.unique(file_rows, return_inverse=True)
        out = self._raw_dense(uniq).astype(self.dtype, copy=False)
        if self.transform == "log1p":
            np.log1p(out, out=out)
        return out if np.array_equal(uniq, file_rows) else out[inverse]

    def _raw_dense(self, uniq: np.ndarray) -> np.ndarray:
        """Sorted unique file rows of a dense-stored matrix, as stored (runs of rows read as slices)."""
        ds = self._elem
        out = np.empty((len(uniq), self.n_vars), ds.dtype)
        starts = np.flatnonzero(np.diff(uniq, prepend=-2) != 1)
        for a, b in zip(starts, np.append(starts[1:], len(uniq))):
            ds.read_direct(out, np.s_[int(uniq[a]):int(uniq[b - 1]) + 1], np.s_[a:b])
        return out

    def _read_sorted(self, uniq: np.ndarray) -> sp.csr_matrix:
        if not len(uniq):
            return sp.csr_matrix((0, self.n_vars), dtype=self.dtype)
        if self.encoding == "array":  # runs of consecutive rows are read as slices
            return dense_to_csr(self._raw_dense(uniq))
        ip = self.indptr
        lo, hi = ip[uniq], ip[uniq + 1]
        # runs: rows whose stored entries lie within `gap` of the previous row's are read in one slice
        new_run = np.ones(len(uniq), bool)
        new_run[1:] = lo[1:] - hi[:-1] > self.gap
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], len(uniq))
        data_parts, index_parts = [], []
        data_ds, index_ds = self._elem["data"], self._elem["indices"]
        for s, e in zip(starts, ends):
            a, b = int(lo[s]), int(hi[e - 1])
            d, ix = data_ds[a:b], index_ds[a:b]
            if e - s == 1 or b - a == int((hi[s:e] - lo[s:e]).sum()):  # contiguous: keep everything
                data_parts.append(d)
                index_parts.append(ix)
            else:
                take = np.concatenate([np.arange(lo[k] - a, hi[k] - a) for k in range(s, e)])
                data_parts.append(d[take])
                index_parts.append(ix[take])
        lengths = hi - lo
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        data = np.concatenate(data_parts) if data_parts else np.zeros(0, self.dtype)
        return sp.csr_matrix((data, np.concatenate(index_parts), indptr), shape=(len(uniq), self.n_vars))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class _CSRSink:
    """One resizable CSR group (X or a layer) being filled row block by row block."""

    def __init__(self, group: h5py.Group, n_vars: int, dtype: np.dtype, index_dtype: np.dtype) -> None:
        self.group, self.n_vars, self.dtype = group, n_vars, np.dtype(dtype)
        group.attrs["encoding-type"] = "csr_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        self.data = group.create_dataset("data", shape=(0,), maxshape=(None,), dtype=self.dtype, chunks=(_DATA_CHUNK,))
        self.indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype,
                                            chunks=(_DATA_CHUNK,))
        self.indptr_parts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self.nnz = 0
        self.rows = 0

    def append(self, block: sp.csr_matrix) -> None:
        block = sp.csr_matrix(block)
        if block.shape[1] != self.n_vars:
            raise ValueError(f"block has {block.shape[1]} columns, expected {self.n_vars}")
        block.sort_indices()
        n = block.nnz
        if n:
            self.data.resize((self.nnz + n,))
            self.data[self.nnz:] = block.data.astype(self.dtype, copy=False)
            self.indices.resize((self.nnz + n,))
            self.indices[self.nnz:] = block.indices.astype(self.indices.dtype, copy=False)
        self.indptr_parts.append(block.indptr[1:].astype(np.int64) + self.nnz)
        self.nnz += n
        self.rows += block.shape[0]

    def finish(self) -> None:
        indptr = np.concatenate(self.indptr_parts)
        self.group.create_dataset("indptr", data=indptr)
        self.group.attrs["shape"] = (self.rows, self.n_vars)


class _DenseSink:
    """A dense X (anndata's ``array`` encoding) filled row block by row block: for outputs that are dense anyway
    (predicted cells: every gene shifted), half the bytes of a CSR and what readers densify to in any case."""

    def __init__(self, f: h5py.File | h5py.Group, name: str, n_vars: int, dtype: np.dtype) -> None:
        rows_per_chunk = max(1, _DATA_CHUNK // max(1, n_vars))
        self.ds = f.create_dataset(name, shape=(0, n_vars), maxshape=(None, n_vars), dtype=np.dtype(dtype),
                                   chunks=(rows_per_chunk, n_vars))
        self.ds.attrs["encoding-type"] = "array"
        self.ds.attrs["encoding-version"] = "0.2.0"
        self.n_vars, self.rows = n_vars, 0

    def append(self, block) -> None:
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        if dense.shape[1] != self.n_vars:
            raise ValueError(f"block has {dense.shape[1]} columns, expected {self.n_vars}")
        n = dense.shape[0]
        self.ds.resize((self.rows + n, self.n_vars))
        self.ds[self.rows:] = dense.astype(self.ds.dtype, copy=False)
        self.rows += n

    def finish(self) -> None:
        pass


class H5adWriter:
    """Write an h5ad row block by row block; the file appears at ``path`` only when complete.

    >>> with H5adWriter(path, obs=obs, var=var, uns=uns, layers={"counts": np.int32}) as w:
    ...     w.append(x_block, counts=count_block)

    ``dense=True`` stores X as a dense array; layers are CSR except those named in ``dense_layers``.
    """

    def __init__(self, path: str | os.PathLike, *, obs: pd.DataFrame, var: pd.DataFrame,
                 uns: dict[str, Any] | None = None, dtype: np.dtype | type = np.float32,
                 layers: dict[str, np.dtype | type] | None = None,
                 obsm: dict[str, np.ndarray] | None = None, dense: bool = False,
                 dense_layers: tuple[str, ...] | list[str] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.obs, self.var = obs, var
        n_vars = len(var)
        # int32 indices are enough below 2**31 columns; anndata reads either.
        index_dtype = np.dtype(np.int32)
        self._f = h5py.File(self._tmp, "w")
        self._f.attrs["encoding-type"] = "anndata"
        self._f.attrs["encoding-version"] = "0.1.0"
        write_elem(self._f, "obs", obs)
        write_elem(self._f, "var", var)
        write_elem(self._f, "uns", uns or {})
        for name, value in (obsm or {}).items():
            if len(value) != len(obs):
                raise ValueError(f"obsm['{name}'] has {len(value)} rows but obs has {len(obs)}")
        write_elem(self._f, "obsm", {k: np.asarray(v) for k, v in (obsm or {}).items()})
        for key in ("varm", "obsp", "varp"):
            write_elem(self._f, key, {})
        self._x = (_DenseSink(self._f, "X", n_vars, dtype) if dense
                   else _CSRSink(self._f.create_group("X"), n_vars, dtype, index_dtype))
        layer_group = self._f.create_group("layers")
        layer_group.attrs["encoding-type"] = "dict"
        layer_group.attrs["encoding-version"] = "0.1.0"
        self._layers = {name: (_DenseSink(layer_group, name, n_vars, dt) if name in dense_layers
                               else _CSRSink(layer_group.create_group(name), n_vars, dt, index_dtype))
                        for name, dt in (layers or {}).items()}
        self._closed = False

    def append(self, x: sp.spmatrix, **layers: sp.spmatrix) -> None:
        """Append a block of rows to X and, by name, to each declared layer (all blocks the same rows)."""
        if set(layers) != set(self._layers):
            raise ValueError(f"append needs exactly the layers {sorted(self._layers)}, got {sorted(layers)}")
        self._x.append(x)
        for name, block in layers.items():
            if block.shape[0] != x.shape[0]:
                raise ValueError(f"layer {name} block has {block.shape[0]} rows, X block has {x.shape[0]}")
            self._layers[name].append(block)

    @property
    def rows_written(self) -> int:
        return self._x.rows

    def close(self) -> None:
        """Finish the file and move it into place; raises if the rows written do not match obs."""
        if self._closed:
            return
        try:
            if self._x.rows != len(self.obs):
                raise ValueError(f"{self.path}: wrote {self._x.rows} rows but obs has {len(self.obs)}")
            self._x.finish()
            for sink in self._layers.values():
                sink.finish()
            self._f.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop the partial file."""
        with contextlib.suppress(Exception):
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        self._closed = True

    def __enter__(self) -> H5adWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_obs(path: str | os.PathLike) -> pd.DataFrame:
    """Only the obs table of an h5ad file."""
    with h5py.File(path, "r") as f:
        return read_elem(f["obs"])


def read_var(path: str | os.PathLike) -> pd.DataFrame:
    """Only the var table of an h5ad file."""
    with h5py.File(path, "r") as f:
        return read_elem(f["var"])


def read_uns(path: str | os.PathLike) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return read_elem(f["uns"]) if "uns" in f else {}


def value_kind(path: str | os.PathLike) -> str:
    """``zscore`` for a signature dataset (L1000), ``labels`` for a labels dataset (PerturbQA), ``log1p`` otherwise
    (from the file's stage-1 provenance)."""
    std = (read_uns(path).get("pertpipe") or {}).get("standardize") or {}
    return std.get("scale") if std.get("scale") in ("zscore", "labels") else "log1p"


def read_anndata(path: str | os.PathLike) -> Any:
    """A whole (small) h5ad file as an AnnData, read through :class:`H5adReader`: X and every layer as stored (a
    dense array stays dense, CSR stays CSR), obs, var, obsm and uns; a missing or broken file is a ContractError
    naming it. For the spatial branch's own files (a slide and its reference fit in memory)."""
    import anndata as ad

    with H5adReader(path) as r:
        def matrix(layer: str | None) -> Any:
            if r.encoding(layer) == "array":
                return np.asarray(r._elem(layer)[...])
            return r.read_masked(layer=layer)

        x = matrix(None)
        layers = {name: matrix(name) for name in r.layers()}
        obsm = {key: r.obsm(key) for key in r.obsm_keys()}
        return ad.AnnData(X=x, obs=r.obs, var=r.var, layers=layers, obsm=obsm, uns=r.uns())


def write_anndata(adata: Any, path: str | os.PathLike) -> None:
    """Write an in-memory AnnData with :class:`H5adWriter` (atomic: the file appears only when complete), keeping
    each matrix's dtype and storage (dense or CSR)."""
    def stored(m: Any) -> tuple[Any, bool]:
        return (m.tocsr(), False) if sp.issparse(m) else (np.asarray(m), True)

    x, x_dense = stored(adata.X)
    layers = {k: stored(v) for k, v in adata.layers.items()}
    with H5adWriter(path, obs=adata.obs, var=adata.var, uns=dict(adata.uns), dtype=x.dtype, dense=x_dense,
                    layers={k: m.dtype for k, (m, _d) in layers.items()},
                    dense_layers=[k for k, (_m, d) in layers.items() if d],
                    obsm={k: np.asarray(v) for k, v in adata.obsm.items()}) as w:
        w.append(x, **{k: m for k, (m, _d) in layers.items()})
