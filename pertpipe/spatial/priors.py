"""Network priors of the LR imputation: a PPI graph Laplacian among LR genes and a ligand -> target prior.

* PPI: STRING v12 (``symbol_a``, ``symbol_b``, ``combined_score`` 0-1000) or iRefIndex (no header: a, b, score 0-1)
  restricted to the LR genes; subunits of one complex are linked (weight 1). L = I - D^-1/2 W D^-1/2.
* Ligand -> target: the NicheNet ligand -> target matrix when given; otherwise built the way NicheNet builds it,
  from what is here: ligand -> receptor (NicheNet v1 LR network + the LR resource's pairs), receptor -> signalling
  (personalised PageRank over the NicheNet signalling network, seeds = the ligand's receptors), TF -> target
  (DoRothEA regulons weighted by confidence, NicheNet's gene-regulatory network). Rows scaled to max 1.
Human networks serve mouse data through symbols matched case-insensitively (orthologues by name); the priors
artifact says so.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe.errors import ContractError

CONFIDENCE_WEIGHT = {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.4, "E": 0.2}


def _is_rdata(head: bytes) -> bool:
    import bz2
    import lzma

    for opener in (lambda b: gzip.decompress(b), lambda b: bz2.decompress(b), lambda b: lzma.decompress(b)):
        try:
            head = opener(head)
            break
        except Exception:  # noqa: BLE001 - not this compression (or truncated: gzip of a short head)
            continue
    return head[:5] in (b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n")


def read_table(path: str | os.PathLike, *, field: str = "table", header: bool = True) -> pd.DataFrame:
    """A network table from its original R data file (read with ``rdata``: the one data.frame in it) or a TSV/CSV
    export of it (gzip or plain; the delimiter is sniffed)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(raw)
        except Exception as exc:  # noqa: BLE001
            raise ContractError(path, field, f"a corrupt gzip file ({exc})", "download the file again") from exc
    else:
        inner = raw
    if inner[:5] in (b"RDX2\n", b"RDX3\n") or (inner is raw and _is_rdata(raw[:4096])):
        import rdata

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            objs = rdata.read_rda(io.BytesIO(raw))
        frames = [v for v in objs.values() if isinstance(v, pd.DataFrame)]
        if len(frames) != 1:
            raise ContractError(path, field, f"{len(frames)} data frames in the R file ({list(objs)})",
                                "give an R data file holding one network data.frame")
        return frames[0].reset_index(drop=True)
    text = inner.decode("utf-8", errors="replace")
    first = text.split("\n", 1)[0]
    sep = "\t" if "\t" in first else ","
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None)
    except Exception as exc:  # noqa: BLE001
        raise ContractError(path, field, f"not a readable table ({exc})", "give a TSV/CSV or the R data file") from exc


def _column(df: pd.DataFrame, names: tuple[str, ...], path, field: str) -> str:
    for n in names:
        if n in df.columns:
            return n
    raise ContractError(path, field, f"none of the columns {list(names)} (columns: {list(df.columns)[:10]})",
                        "give the network file the registry names")


def read_ppi(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """PPI edges (a, b, weight in [0, 1]) from STRING (``string``) or iRefIndex (``iref``)."""
    if kind == "string":
        df = read_table(path, field="string")
        a, b = _column(df, ("symbol_a", "preferred_name_a", "protein1"), path, "symbol_a"), \
            _column(df, ("symbol_b", "preferred_name_b", "protein2"), path, "symbol_b")
        w = df[_column(df, ("combined_score", "score"), path, "combined_score")].astype(float)
        w = w / 1000.0 if w.max() > 1 else w
    elif kind == "iref":
        df = read_table(path, field="iref", header=False)
        if df.shape[1] < 3:
            raise ContractError(path, "iref", f"{df.shape[1]} columns", "give iRefIndex's 3-column interactome")
        a, b = df.columns[0], df.columns[1]
        w = df[df.columns[2]].astype(float)
    else:
        raise ContractError("<config>", "spatial.priors.ppi", f"unknown PPI '{kind}'", "use string, iref or none")
    return pd.DataFrame({"a": df[a].astype(str), "b": df[b].astype(str), "weight": w.clip(0, 1)})


def _namer(genes: list[str]) -> dict[str, str]:
    """Network symbol (upper case) -> the dataset's spelling (human and mouse symbols match case-insensitively)."""
    return {g.upper(): g for g in genes}


def ppi_adjacency(edges: pd.DataFrame, genes: list[str], complexes: list[list[str]] | None = None,
                  *, min_weight: float = 0.0) -> sp.csr_matrix:
    """Symmetric weighted adjacency among ``genes``: PPI edges (max weight per pair) + complex subunits (weight 1)."""
    idx = {g: i for i, g in enumerate(genes)}
    name = _namer(genes)
    a = edges["a"].str.upper().map(name)
    b = edges["b"].str.upper().map(name)
    keep = a.notna() & b.notna() & (a != b) & (edges["weight"] >= min_weight)
    rows = [idx[x] for x in a[keep]]
    cols = [idx[x] for x in b[keep]]
    vals = list(edges["weight"][keep].astype(float))
    for cx in complexes or []:
        members = [idx[g] for g in cx if g in idx]
        for i in members:
            for j in members:
                if i != j:
                    rows.append(i)
                    cols.append(j)
                    vals.append(1.0)
    n = len(genes)
    best: dict[tuple[int, int], float] = {}  # undirected; a pair seen twice keeps its strongest evidence
    for i, j, v in zip(rows, cols, vals):
        for key in ((i, j), (j, i)):
            best[key] = max(best.get(key, 0.0), v)
    if not best:
        return sp.csr_matrix((n, n))
    (ri, ci), vv = zip(*best.keys()), list(best.values())
    return sp.csr_matrix((vv, (ri, ci)), shape=(n, n))


def normalized_laplacian(w: sp.spmatrix) -> np.ndarray:
    """L = I - D^-1/2 W D^-1/2 (isolated genes get a zero row: no smoothness on them)."""
    w = sp.csr_matrix(w, dtype=np.float64)
    deg = np.asarray(w.sum(1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = 1.0 / np.sqrt(deg[deg > 0])
    lap = -(sp.diags(inv) @ w @ sp.diags(inv)).toarray()
    lap[np.diag_indices_from(lap)] += (deg > 0).astype(float)
    return lap


def _ppr(adj: sp.csr_matrix, seeds: np.ndarray, *, damping: float, iters: int = 50) -> np.ndarray:
    """Personalised PageRank over a directed graph (rows = from): seeds [k, n] -> scores [k, n]."""
    out = np.asarray(adj.sum(1)).ravel()
    inv = np.zeros_like(out, dtype=np.float64)
    inv[out > 0] = 1.0 / out[out > 0]
    trans = sp.diags(inv) @ adj  # row-stochastic where a node has out-edges
    p = seeds.copy()
    for _ in range(iters):
        p = (1 - damping) * seeds + damping * np.asarray((trans.T @ p.T).T)
    return p


def ligand_target_prior(ligands: list[str], targets: list[str], *, lr_network: pd.DataFrame,
                        sig_network: pd.DataFrame, dorothea: pd.DataFrame, gr_network: pd.DataFrame | None = None,
                        extra_receptors: dict[str, list[str]] | None = None, damping: float = 0.5,
                        max_confidence: str = "C") -> tuple[np.ndarray, dict[str, Any]]:
    """[n_ligands, n_targets] regulatory potential via receptor -> signalling -> TF -> target paths (rows max 1).

    Networks: NicheNet ``from``/``to`` tables; DoRothEA ``tf``/``confidence``/``target``. Receptors of a ligand come
    from the LR network and from ``extra_receptors`` (the LR resource's pairs)."""
    up = str.upper
    nodes: dict[str, int] = {}

    def node(g: str) -> int:
        return nodes.setdefault(up(g), len(nodes))

    sig_from = [node(g) for g in sig_network["from"].astype(str)]
    sig_to = [node(g) for g in sig_network["to"].astype(str)]
    conf_ok = set("ABCDE"[: "ABCDE".index(max_confidence) + 1])
    dor = dorothea[dorothea["confidence"].astype(str).isin(conf_ok)]
    reg = [(up(t), up(g), CONFIDENCE_WEIGHT[str(c)]) for t, g, c in
           zip(dor["tf"].astype(str), dor["target"].astype(str), dor["confidence"].astype(str))]
    if gr_network is not None and len(gr_network):
        reg += [(up(a), up(b), 1.0) for a, b in zip(gr_network["from"].astype(str), gr_network["to"].astype(str))]
    for tf, _, _ in reg:
        node(tf)
    receptors: dict[str, set[str]] = {}
    for a, b in zip(lr_network["from"].astype(str), lr_network["to"].astype(str)):
        receptors.setdefault(up(a), set()).add(up(b))
    for lig, recs in (extra_receptors or {}).items():
        receptors.setdefault(up(lig), set()).update(up(r) for r in recs)
    for recs in receptors.values():
        for r in recs:
            node(r)
    n = len(nodes)
    adj = sp.csr_matrix((np.ones(len(sig_from)), (sig_from, sig_to)), shape=(n, n))
    adj.data[:] = 1.0
    seeds = np.zeros((len(ligands), n))
    for i, lig in enumerate(ligands):
        recs = [nodes[r] for r in receptors.get(up(lig), ())]
        if recs:
            seeds[i, recs] = 1.0 / len(recs)
    scores = _ppr(adj, seeds, damping=damping) if len(nodes) else seeds
    tcol = {up(t): j for j, t in enumerate(targets)}
    tf_rows, tg_cols, w = [], [], []
    for tf, tg, wt in reg:
        if tg in tcol:
            tf_rows.append(nodes[tf])
            tg_cols.append(tcol[tg])
            w.append(wt)
    grn = sp.coo_matrix((w, (tf_rows, tg_cols)), shape=(n, len(targets))).tocsr()
    prior = np.asarray(sp.csr_matrix(scores) @ grn.toarray()) if grn.nnz else np.zeros((len(ligands), len(targets)))
    row_max = prior.max(1, keepdims=True)
    prior = np.divide(prior, row_max, out=np.zeros_like(prior), where=row_max > 0)
    info = {"n_ligands_with_receptors": int((seeds.sum(1) > 0).sum()), "n_ligands_with_targets": int((row_max > 0).sum()),
            "n_signalling_edges": len(sig_from), "n_regulatory_edges": len(reg), "damping": damping,
            "max_confidence": max_confidence, "nonzero_fraction": float((prior > 0).mean()) if prior.size else 0.0}
    return prior, info


def read_ligand_target_matrix(path: str | os.PathLike, ligands: list[str], targets: list[str]) -> np.ndarray:
    """NicheNet's published ligand -> target matrix (R matrix targets x ligands, .rds) restricted to our genes."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = rdata.read_rds(path)
    if not hasattr(m, "dims"):
        raise ContractError(path, "ligand_target_matrix", f"an R {type(m).__name__}, not a matrix",
                            "give NicheNet's ligand_target_matrix.rds (targets x ligands)")
    df = pd.DataFrame(np.asarray(m.values), index=[str(v).upper() for v in m.coords[m.dims[0]].values],
                      columns=[str(v).upper() for v in m.coords[m.dims[1]].values])
    out = df.reindex(index=[t.upper() for t in targets], columns=[g.upper() for g in ligands]).fillna(0.0).T.to_numpy()
    row_max = out.max(1, keepdims=True)
    return np.divide(out, row_max, out=np.zeros_like(out), where=row_max > 0)
