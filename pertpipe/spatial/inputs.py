"""Read a spatial + scRNA pair into two AnnData objects of raw counts.

* spatial: X = counts (spots x genes, CSR float32), ``obsm['spatial']`` = coordinates (x, y).
* scrna:   X = counts (cells x genes, CSR float32), ``obs['cell_type']``.

Adapters (registry ``spatial_datasets.<name>.adapter``):
* ``spacexr_rds``: spacexr's R objects: a counts matrix (dgCMatrix/dgTMatrix genes x spots), a coordinates data
  frame and a ``Reference`` S4 object (``counts``, ``cell_types``); read with ``rdata``.
* ``spacexr_csv``: spacexr's CSV layout: counts genes x cells (first column = gene), coords (barcode, x, y),
  reference counts and a cell-type table (barcode, type).
* ``h5ad_pair``: two h5ad files (a user's own data): ``spatial`` with ``obsm['spatial']`` and ``scrna`` with a
  cell-type column (``adapter_options.cell_type_col``, default ``cell_type``).
Gene symbols are harmonised: whitespace stripped, duplicated symbols summed.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe.errors import ContractError

ROLES = {
    "spacexr_rds": ("counts", "coords", "reference"),
    "spacexr_csv": ("counts", "coords", "ref_counts", "ref_cell_types"),
    "h5ad_pair": ("spatial", "scrna"),
}


def _read_rds(path: str | os.PathLike, field: str) -> Any:
    import rdata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata has no constructor for dgCMatrix / Reference and says so
            return rdata.read_rds(path)
    except Exception as exc:  # noqa: BLE001 - rdata raises many types on a bad file
        raise ContractError(path, field, f"not a readable R .rds file ({type(exc).__name__}: {exc})",
                            "give the original .rds object (or use the spacexr_csv / h5ad_pair adapter)") from exc


def _matrix(obj: Any, path, field: str) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """genes x cells R matrix (sparse Matrix-package or dense) -> (cells x genes CSR, genes, cells)."""
    from pertpipe.data.sources import r_sparse_matrix

    if hasattr(obj, "values") and hasattr(obj, "dims"):  # xarray DataArray (a dense R matrix)
        m = sp.csr_matrix(np.asarray(obj.values, dtype=np.float32))
        genes = [str(v) for v in obj.coords[obj.dims[0]].values]
        cells = [str(v) for v in obj.coords[obj.dims[1]].values]
    else:
        m, genes, cells = r_sparse_matrix(obj, path=path, field=field)
    if cells is None:
        raise ContractError(path, field, "the matrix has no column (cell/spot) names", "give a matrix with dimnames")
    return sp.csr_matrix(m.T, dtype=np.float32), genes, cells


def _coords_frame(df: pd.DataFrame, path, field: str) -> pd.DataFrame:
    cols = [c for c in df.columns if str(c).lower() in ("x", "y", "imagerow", "imagecol")]
    if len(cols) < 2:
        raise ContractError(path, field, f"no x/y columns (columns: {list(df.columns)[:8]})",
                            "give a table with the spot barcode as first column and columns x, y")
    out = df[cols[:2]].astype(float)
    out.columns = ["x", "y"]
    out.index = out.index.astype(str)
    return out


def _counts_check(m: sp.csr_matrix, path, field: str) -> None:
    if m.nnz and (np.any(m.data < 0) or not np.allclose(m.data, np.round(m.data))):
        raise ContractError(path, field, "values are not raw counts (negative or non-integer values)",
                            "give raw UMI counts, not normalised or log-transformed values")
    why = rank_like(m)
    if why:
        raise ContractError(path, field, f"the values are integers but not counts: {why}",
                            "give raw UMI counts (what the counting pipeline writes); ranks or rank-transformed "
                            "values cannot be normalised like counts")


def _ranked_lines(m: sp.csr_matrix, n_other: int, pick: np.ndarray) -> tuple[int, int, int]:
    """Of the sampled rows of ``m`` (``n_other`` columns) with >= 10 non-zero values: how many are a permutation
    (non-zero values exactly 1..k: ranks, or ranked non-zeros; or all values 0..n-1), and how many have (nearly) all
    values distinct; and how many were eligible."""
    perm = distinct = eligible = 0
    for i in pick:
        v = np.sort(m.data[m.indptr[i]:m.indptr[i + 1]])
        if len(v) < 10:
            continue
        eligible += 1
        if np.array_equal(v, np.arange(1, len(v) + 1)) or (len(v) == n_other - 1 and
                                                            np.array_equal(v, np.arange(1, n_other))):
            perm += 1
        if len(v) >= 20 and len(np.unique(v)) >= 0.9 * len(v):
            distinct += 1
    return perm, distinct, eligible


def rank_like(m: sp.spmatrix | np.ndarray, *, rows: int = 200, seed: int = 0) -> str | None:
    """Why integer values look like ranks or bins rather than counts (None when they do not):

    * most sampled rows (spots / cells) or most sampled genes are a permutation: their non-zero values exactly
      1..k (ranks; or each gene's non-zero values ranked), or all values 0..n-1;
    * the matrix has no zero and the sampled rows' values are nearly all distinct (counts repeat small values);
    * percentile bins: (almost) no zero, every value within 1..101 and spread evenly over that range (counts pile
      up at small values: a count matrix has most of its values in the lower half of its range)."""
    m = sp.csr_matrix(m)
    n_rows, n_cols = m.shape
    if n_rows == 0 or n_cols < 10 or m.nnz == 0:
        return None
    rng = np.random.default_rng(seed)
    for what, mat, n_other in (("rows", m, n_cols), ("genes", sp.csr_matrix(m.T), n_rows)):
        pick = rng.choice(mat.shape[0], min(rows, mat.shape[0]), replace=False)
        perm, distinct, eligible = _ranked_lines(mat, n_other, pick)
        if eligible and perm >= 0.5 * eligible:
            return (f"{perm} of {eligible} sampled {what} are a permutation: their non-zero values are exactly 1..n "
                    "(ranks, or ranked non-zero values)")
        if what == "rows" and m.nnz == n_rows * n_cols and eligible and distinct >= 0.5 * eligible:
            return (f"no zero anywhere and {distinct} of {eligible} sampled rows have (nearly) all values distinct, "
                    "a uniform spread as ranks have")
    zeros = 1.0 - m.nnz / (n_rows * n_cols)
    vmax = float(m.data.max())
    if zeros < 0.01 and vmax <= 101 and float(m.data.min()) >= 0:
        lower = float(np.mean(m.data <= vmax / 2))
        if 0.3 <= lower <= 0.7:
            return (f"{zeros:.1%} zeros and every value within 0..{vmax:g}, spread evenly over that range "
                    f"({lower:.0%} in its lower half): percentile bins, not counts")
    return None


def _harmonise(a: ad.AnnData) -> ad.AnnData:
    """Strip gene symbols and sum duplicated ones (keeps the first spelling)."""
    names = pd.Index([str(g).strip() for g in a.var_names])
    if names.is_unique:
        a.var_names = names
        return a
    codes, uniq = pd.factorize(names)
    agg = sp.csr_matrix((np.ones(len(codes), np.float32), (np.arange(len(codes)), codes)), shape=(len(codes), len(uniq)))
    return ad.AnnData(X=sp.csr_matrix(a.X @ agg, dtype=np.float32), obs=a.obs, obsm=dict(a.obsm),
                      var=pd.DataFrame(index=pd.Index(uniq.astype(str))))


def _pair(counts: sp.csr_matrix, genes, spots, coords: pd.DataFrame, ref: sp.csr_matrix, ref_genes, cells,
          cell_types: pd.Series, where: dict[str, str]) -> tuple[ad.AnnData, ad.AnnData]:
    missing = [s for s in spots if s not in coords.index]
    if missing:
        raise ContractError(where["coords"], "coordinates", f"{len(missing)} spots of the counts have no coordinates "
                            f"(e.g. {missing[:3]})", "give the coordinates file of the same slide")
    spatial = ad.AnnData(X=counts, obs=pd.DataFrame(index=pd.Index(spots)), var=pd.DataFrame(index=pd.Index(genes)))
    spatial.obsm["spatial"] = coords.loc[spots, ["x", "y"]].to_numpy(np.float64)
    ct = cell_types.reindex(cells)
    if ct.isna().any():
        raise ContractError(where["types"], "cell_type", f"{int(ct.isna().sum())} reference cells have no cell type",
                            "give the cell-type table of the same reference")
    scrna = ad.AnnData(X=ref, obs=pd.DataFrame({"cell_type": pd.Categorical(ct.astype(str).to_numpy())},
                                               index=pd.Index(cells)), var=pd.DataFrame(index=pd.Index(ref_genes)))
    return _harmonise(spatial), _harmonise(scrna)


def read_spacexr_rds(counts: str, coords: str, reference: str) -> tuple[ad.AnnData, ad.AnnData]:
    m, genes, spots = _matrix(_read_rds(counts, "counts"), counts, "counts")
    _counts_check(m, counts, "counts")
    cdf = _read_rds(coords, "coords")
    if not isinstance(cdf, pd.DataFrame):
        raise ContractError(coords, "coords", f"an R {type(cdf).__name__}, not a data.frame", "give coords.rds")
    ref = _read_rds(reference, "reference")
    for slot in ("counts", "cell_types"):
        if not hasattr(ref, slot):
            raise ContractError(reference, slot, "the Reference object has no such slot",
                                "give spacexr's Reference object (slots counts, cell_types, nUMI)")
    rm, rgenes, cells = _matrix(ref.counts, reference, "counts")
    _counts_check(rm, reference, "counts")
    types = ref.cell_types
    if isinstance(types, pd.Categorical) or not hasattr(types, "index"):
        types = pd.Series(np.asarray(types, dtype=object), index=cells)  # R factor without names: in column order
    return _pair(m, genes, spots, _coords_frame(cdf, coords, "coords"), rm, rgenes, cells, types.astype(str),
                 {"coords": coords, "types": reference})


def _csv_counts(path: str, field: str) -> tuple[sp.csr_matrix, list[str], list[str]]:
    try:
        df = pd.read_csv(path, index_col=0)
    except Exception as exc:  # noqa: BLE001
        raise ContractError(path, field, f"not a readable CSV ({exc})", "give genes x cells counts as CSV") from exc
    if df.shape[1] == 0 or not all(np.issubdtype(t, np.number) for t in df.dtypes):
        raise ContractError(path, field, "expected genes x cells numeric counts with gene names in the first column",
                            "give spacexr's counts.csv layout")
    m = sp.csr_matrix(df.to_numpy(np.float32).T)
    _counts_check(m, path, field)
    return m, [str(g) for g in df.index], [str(c) for c in df.columns]


def read_spacexr_csv(counts: str, coords: str, ref_counts: str, ref_cell_types: str) -> tuple[ad.AnnData, ad.AnnData]:
    m, genes, spots = _csv_counts(counts, "counts")
    cdf = _coords_frame(pd.read_csv(coords, index_col=0), coords, "coords")
    rm, rgenes, cells = _csv_counts(ref_counts, "ref_counts")
    types = pd.read_csv(ref_cell_types, index_col=0)
    if types.shape[1] < 1:
        raise ContractError(ref_cell_types, "cell_type", "no cell-type column", "give a table barcode, cell type")
    types.index = types.index.astype(str)
    return _pair(m, genes, spots, cdf, rm, rgenes, cells, types.iloc[:, 0].astype(str),
                 {"coords": coords, "types": ref_cell_types})


def read_h5ad_pair(spatial: str, scrna: str, *, cell_type_col: str = "cell_type",
                   spatial_key: str = "spatial") -> tuple[ad.AnnData, ad.AnnData]:
    sa, sc = ad.read_h5ad(spatial), ad.read_h5ad(scrna)
    if spatial_key not in sa.obsm:
        raise ContractError(spatial, f"obsm['{spatial_key}']", f"absent (obsm keys: {list(sa.obsm)})",
                            "store spot coordinates in obsm['spatial'] or set adapter_options.spatial_key")
    if cell_type_col not in sc.obs:
        raise ContractError(scrna, f"obs['{cell_type_col}']", f"absent (obs columns: {list(sc.obs.columns)})",
                            "set adapter_options.cell_type_col to the reference's cell-type column")
    out = []
    for a, path in ((sa, spatial), (sc, scrna)):
        x = sp.csr_matrix(a.X, dtype=np.float32)
        _counts_check(x, path, "X")
        out.append(ad.AnnData(X=x, obs=pd.DataFrame(index=a.obs_names.astype(str)), var=pd.DataFrame(index=a.var_names)))
    out[0].obsm["spatial"] = np.asarray(sa.obsm[spatial_key], dtype=np.float64)[:, :2]
    out[1].obs["cell_type"] = pd.Categorical(sc.obs[cell_type_col].astype(str).to_numpy())
    return _harmonise(out[0]), _harmonise(out[1])


def read_pair(adapter: str, files: dict[str, str], options: dict[str, Any] | None = None
              ) -> tuple[ad.AnnData, ad.AnnData]:
    """(spatial, scrna) for a registry/user spatial entry; ``files`` maps the adapter's roles to local paths."""
    if adapter not in ROLES:
        raise ContractError("<config>", "adapter", f"unknown spatial adapter '{adapter}'", f"use one of {list(ROLES)}")
    missing = [r for r in ROLES[adapter] if r not in files]
    if missing:
        raise ContractError("<registry>", "inputs", f"adapter {adapter} needs inputs {missing}",
                            f"name them under inputs: ({', '.join(ROLES[adapter])})")
    args = {r: str(files[r]) for r in ROLES[adapter]}
    if adapter == "spacexr_rds":
        pair = read_spacexr_rds(**args)
    elif adapter == "spacexr_csv":
        pair = read_spacexr_csv(**args)
    else:
        pair = read_h5ad_pair(**args, **(options or {}))
    for a, role in zip(pair, ("spatial", "scrna")):
        if a.n_obs < 10 or a.n_vars < 5:
            raise ContractError(files.get(role, adapter), "X", f"the {role} data has {a.n_obs} x {a.n_vars} entries",
                                "give at least 10 spots/cells and 5 genes")
    return pair


def summary(spatial: ad.AnnData, scrna: ad.AnnData) -> dict[str, Any]:
    shared = spatial.var_names.intersection(scrna.var_names)
    sp_umi = np.asarray(spatial.X.sum(1)).ravel()
    return {
        "spatial": {"n_spots": spatial.n_obs, "n_genes": spatial.n_vars, "median_umi": float(np.median(sp_umi)),
                    "nonzero_fraction": float(spatial.X.nnz / max(1, spatial.n_obs * spatial.n_vars))},
        "scrna": {"n_cells": scrna.n_obs, "n_genes": scrna.n_vars,
                  "cell_types": {str(k): int(v) for k, v in scrna.obs["cell_type"].value_counts().sort_index().items()}},
        "shared_genes": len(shared),
    }
