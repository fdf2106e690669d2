"""Source files that are not h5ad: read the original public object and hand stage 1 an h5ad.

Stage 1 streams h5ad files chunk by chunk. A few public sources come as R objects (``.rda``/``.RData``/
``.rds``), read here with the pure-Python ``rdata`` package; R's loaders have no partial reads, so such a
source is loaded whole (these objects are small: the Papalexi 2021 list is 20,729 cells × 299 genes) and
written once to a temporary h5ad beside the stage-1 output, which is removed afterwards.

Formats (``adapter_options.source_format``): ``h5ad`` (default, read as it is) and ``sceptre_rda`` (an R list
as in the ``sceptredata`` package: ``response_matrix`` genes × cells, ``grna_matrix`` guides × cells,
``extra_covariates`` per cell, ``grna_target_data_frame`` guide → target).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe.errors import ContractError

SOURCE_FORMATS = ("h5ad", "sceptre_rda")
_SCEPTRE_FIELDS = ("response_matrix", "grna_matrix", "grna_target_data_frame")


def r_sparse_matrix(obj: Any, *, path: object, field: str) -> tuple[sp.csr_matrix, list[str], list[str] | None]:
    """A Matrix-package sparse matrix (dgCMatrix / dgTMatrix / dgRMatrix) as CSR, with its row/column names."""
    cls = str(np.asarray(getattr(obj, "class", [""]))[0]) if hasattr(obj, "class") else type(obj).__name__
    if sp.issparse(obj):
        m = obj.tocsr()
        return m, [str(i) for i in range(m.shape[0])], None
    dim = tuple(int(x) for x in np.asarray(obj.Dim))
    x = np.asarray(obj.x, dtype=np.float64)
    if cls == "dgTMatrix":
        m = sp.coo_matrix((x, (np.asarray(obj.i), np.asarray(obj.j))), shape=dim).tocsr()
    elif cls == "dgCMatrix":
        m = sp.csc_matrix((x, np.asarray(obj.i), np.asarray(obj.p)), shape=dim).tocsr()
    elif cls == "dgRMatrix":
        m = sp.csr_matrix((x, np.asarray(obj.j), np.asarray(obj.p)), shape=dim)
    else:
        raise ContractError(path, field, f"an R object of class '{cls}', not a sparse count matrix",
                            "give a dgCMatrix/dgTMatrix (Matrix package) of genes x cells")
    names = list(obj.Dimnames) if getattr(obj, "Dimnames", None) is not None else [None, None]
    rows = [str(v) for v in names[0]] if names[0] is not None else [f"row{i}" for i in range(dim[0])]
    cols = [str(v) for v in names[1]] if len(names) > 1 and names[1] is not None else None
    return m, rows, cols


def read_sceptre_rda(path: str | os.PathLike, *, object_name: str | None = None):
    """The sceptre-style R list in ``path`` as an AnnData: X = counts (cells × genes), ``obsm['grna_counts']``,
    ``uns['grna_ids']`` / ``uns['grna_targets']`` and the per-cell covariates in obs."""
    import anndata as ad
    import rdata

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns about Matrix classes it returns as plain namespaces
        try:
            objects = rdata.read_rda(path)
        except Exception as exc:  # rdata raises plain errors for anything that is not an R save file
            raise ContractError(path, "file", f"not a readable R data file ({type(exc).__name__}: {exc})",
                                "give the original .rda/.RData file, or convert it to h5ad") from exc
    if object_name is None:
        lists = [k for k, v in objects.items() if isinstance(v, dict)]
        if len(lists) != 1:
            raise ContractError(path, "object", f"{len(lists)} R lists in the file ({sorted(objects)})",
                                "set adapter_options.rda_object to the list to read")
        object_name = lists[0]
    if object_name not in objects:
        raise ContractError(path, object_name, f"no such object (the file holds {sorted(objects)})",
                            "set adapter_options.rda_object to one of those")
    obj = {str(k): v for k, v in objects[object_name].items()}
    missing = [f for f in _SCEPTRE_FIELDS if f not in obj]
    if missing:
        raise ContractError(path, f"{object_name}${missing[0]}", f"missing (the list has {sorted(obj)})",
                            f"a sceptre_rda source needs {list(_SCEPTRE_FIELDS)}")
    expr, genes, cells = r_sparse_matrix(obj["response_matrix"], path=path, field="response_matrix")
    grna, guides, _ = r_sparse_matrix(obj["grna_matrix"], path=path, field="grna_matrix")
    if expr.shape[1] != grna.shape[1]:
        raise ContractError(path, "grna_matrix", f"{grna.shape[1]} cells but response_matrix has {expr.shape[1]}",
                            "give both matrices over the same cells")
    n = expr.shape[1]
    table = obj["grna_target_data_frame"]
    id_col = "grna_id" if "grna_id" in table.columns else table.columns[0]
    tgt_col = "grna_target" if "grna_target" in table.columns else table.columns[1]
    target_of = dict(zip(table[id_col].astype(str), table[tgt_col].astype(str)))
    absent = [g for g in guides if g not in target_of]
    if absent:
        raise ContractError(path, "grna_target_data_frame", f"{len(absent)} guides of grna_matrix have no target "
                            f"(e.g. {absent[:5]})", "list every guide in grna_target_data_frame")
    cov = obj.get("extra_covariates")
    obs = pd.DataFrame(index=cells or [f"cell{i}" for i in range(n)])
    if isinstance(cov, pd.DataFrame) and len(cov) == n:
        for col in cov.columns:
            obs[str(col)] = cov[col].astype(str).to_numpy()
    var = pd.DataFrame(index=pd.Index(genes))
    a = ad.AnnData(X=sp.csr_matrix(expr.T, dtype=np.float32), obs=obs, var=var)
    a.obsm["grna_counts"] = sp.csr_matrix(grna.T, dtype=np.float32)
    a.uns["grna_ids"] = np.asarray(guides, dtype=object)
    a.uns["grna_targets"] = np.asarray([target_of[g] for g in guides], dtype=object)
    a.uns["source_object"] = f"{path.name}:{object_name}"
    return a


@contextlib.contextmanager
def as_h5ad(src: str | os.PathLike, fmt: str, *, workdir: str | os.PathLike,
            object_name: str | None = None) -> Iterator[Path]:
    """Yield an h5ad path for source ``src`` in format ``fmt`` (a temporary one for non-h5ad formats)."""
    src = Path(src)
    if fmt not in SOURCE_FORMATS:
        raise ContractError(src, "adapter_options.source_format", f"'{fmt}' is not a known source format",
                            f"use one of {list(SOURCE_FORMATS)}")
    if not src.exists():
        raise ContractError(src, "file", "no such file", "check the dataset's path/url in config or the registry")
    if fmt == "h5ad":
        yield src
        return
    from pertpipe.io import work_dir

    adata = read_sceptre_rda(src, object_name=object_name)
    with work_dir(workdir) as folder:  # removed on exit; one left by a killed job is removed by the next
        tmp = folder / f"{src.name}.source.h5ad"
        adata.write_h5ad(tmp)
        yield tmp
