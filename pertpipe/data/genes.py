"""Gene universes, NCBI alias rescue and chunked alignment of a canonical h5ad to a universe.

Alignment maps each source gene to a universe symbol (exact match first, then a unique NCBI synonym),
builds a sparse 0/1 selection matrix ``S`` [source genes x universe], and streams ``X @ S`` chunk by
chunk: universe genes the source did not measure are zero columns, marked ``var["in_source"] = False``.
"""

from __future__ import annotations

import gzip
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import COMBO_SEP, CONTROL_LABEL, perturbation_genes
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.errors import ConfigError, ContractError


def _open_text(path: str | os.PathLike):
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path)


def load_universe(path: str | os.PathLike) -> list[str]:
    """A gene list: one symbol per line, no header (the file ``cell-eval prep -g`` takes)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: gene universe file not found. Fix: set stage1.universe (kind vcc/file/source)")
    with _open_text(path) as fh:
        genes = [line.strip().split(",")[0].strip() for line in fh if line.strip()]
    if genes and genes[0].lower() in ("gene", "genes", "gene_name", "gene_names", "symbol", "gene_symbol"):
        raise ContractError(path, "line 1", f"looks like a header ('{genes[0]}')",
                            "remove the header: the universe file is one symbol per line, no header")
    if not genes:
        raise ContractError(path, "file", "empty gene list", "give one gene symbol per line")
    seen: set[str] = set()
    dups = [g for g in genes if g in seen or seen.add(g)]
    if dups:
        raise ContractError(path, "genes", f"{len(dups)} duplicate symbols (e.g. {dups[:5]})", "make the list unique")
    return genes


def knowledge_genes(readout: list[str], labels: Any) -> tuple[list[str], list[str]]:
    """The genes the knowledge stage describes on a cells or signatures run: the readout genes in their order,
    then every perturbation target the run names (training and held-out labels, doubles split) that the readout
    does not hold, sorted. A gene panel (a source universe of a few hundred genes) rarely holds its own
    perturbation targets, and a model that reads a target's facets must find them. Returns (genes, the targets
    added)."""
    have = set(readout)
    extra = sorted({g for label in labels for g in perturbation_genes(str(label)) if g and g not in have})
    return [*readout, *extra], extra


def write_knowledge_genes(genes_path: str | os.PathLike, train_path: str | os.PathLike,
                          template_path: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Any]:
    """``knowledge_genes.txt``: :func:`knowledge_genes` of stage 1's ``genes.txt``, the training file's labels and
    the prediction template's, written atomically; returns its figures."""
    from pertpipe.core.h5io import read_obs
    from pertpipe.io import atomic_path

    readout = load_universe(genes_path)
    template = pd.read_csv(template_path)
    if "target_gene" not in template.columns:
        raise ContractError(template_path, "target_gene", "column missing",
                            "re-run the ground_truth rule (it writes template.csv)")
    labels = [*read_obs(train_path)["target_gene"].astype(str).unique(), *template["target_gene"].astype(str)]
    genes, extra = knowledge_genes(readout, labels)
    with atomic_path(dest) as tmp:
        Path(tmp).write_text("".join(f"{g}\n" for g in genes))
    return {"genes": len(genes), "readout_genes": len(readout), "targets_outside_readout": len(extra),
            "examples": extra[:10]}


def load_alias_map(gene_info: str | os.PathLike, universe: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """Name -> universe symbol from NCBI gene_info, both ways round.

    A source may name a gene by an old alias of a universe symbol (``Synonyms`` of the universe gene's
    row), or by the current symbol of a gene the universe lists under an old name (a row whose ``Symbol``
    is outside the universe and one of whose synonyms is in it, e.g. ACP3 -> ACPP). Names claimed by
    more than one universe gene are ambiguous and left out (counted in the stats).
    """
    path = Path(gene_info)
    uni = set(universe)
    rows: list[tuple[str, list[str]]] = []
    with _open_text(path) as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        try:
            i_sym, i_syn = header.index("Symbol"), header.index("Synonyms")
        except ValueError as exc:
            raise ContractError(path, "header", f"no Symbol/Synonyms columns (header: {header[:6]})",
                                "give an NCBI gene_info file (Homo_sapiens.gene_info.gz)") from exc
        i_auth = header.index("Symbol_from_nomenclature_authority") if "Symbol_from_nomenclature_authority" in header \
            else None
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < len(header):
                raise ContractError(path, f"line {lineno}", f"{len(parts)} columns, header has {len(header)}",
                                    "restore the file (re-download it)")
            sym = parts[i_sym]
            names = [] if parts[i_syn] == "-" else parts[i_syn].split("|")
            if i_auth is not None and parts[i_auth] not in ("-", sym):
                names.append(parts[i_auth])
            rows.append((sym, [a for a in names if a and a != sym]))
    current = {sym for sym, _ in rows}  # a current symbol always means its own gene, never an alias
    owners: dict[str, int] = defaultdict(int)  # an alias listed by several genes is ambiguous
    for _sym, names in rows:
        for a in set(names):
            owners[a] += 1
    claims: dict[str, set[str]] = defaultdict(set)
    amb_owners: set[str] = set()
    for sym, names in rows:
        if sym in uni:
            # the source may use an old alias of a universe symbol
            for a in names:
                if a not in uni and a not in current:
                    if owners[a] > 1:
                        amb_owners.add(a)
                    else:
                        claims[a].add(sym)
        else:
            # or the current symbol of a gene the universe lists under a retired name (ACP3 -> ACPP)
            for a in names:
                if a in uni and a not in current:
                    claims[sym].add(a)
    amb = {a for a, s in claims.items() if len(s) > 1} | amb_owners
    amap = {a: next(iter(s)) for a, s in claims.items() if a not in amb}
    return amap, {"aliases": len(amap), "ambiguous_aliases": len(amb)}


@dataclass
class AlignmentPlan:
    universe: list[str]
    source_genes: list[str]
    source_index: np.ndarray  # per universe gene: source column or -1
    rescued: dict[str, str] = field(default_factory=dict)  # source alias -> universe symbol
    dropped: list[str] = field(default_factory=list)  # source genes not placed in the universe

    @property
    def n_matched(self) -> int:
        return int((self.source_index >= 0).sum()) - len(self.rescued)

    @property
    def n_filled(self) -> int:
        return int((self.source_index < 0).sum())

    def selection_matrix(self) -> sp.csr_matrix:
        """[source genes x universe] 0/1 matrix: ``X_source @ S`` is X in universe order."""
        cols = np.flatnonzero(self.source_index >= 0)
        rows = self.source_index[cols]
        data = np.ones(len(cols), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(self.source_genes), len(self.universe)))


def plan_alignment(source_genes: list[str], universe: list[str], aliases: dict[str, str] | None = None) -> AlignmentPlan:
    """Place each source gene in the universe: exact symbol first, then a unique alias; the rest is dropped."""
    pos = {g: i for i, g in enumerate(universe)}
    idx = np.full(len(universe), -1, dtype=np.int64)
    placed = np.zeros(len(source_genes), dtype=bool)
    for j, g in enumerate(source_genes):
        i = pos.get(g)
        if i is not None and idx[i] < 0:
            idx[i], placed[j] = j, True
    rescued: dict[str, str] = {}
    for j, g in enumerate(source_genes):
        if placed[j] or not aliases:
            continue
        target = aliases.get(g)
        if target is not None and idx[pos[target]] < 0:
            idx[pos[target]], placed[j] = j, True
            rescued[g] = target
    dropped = [g for j, g in enumerate(source_genes) if not placed[j]]
    return AlignmentPlan(universe, list(source_genes), idx, rescued, dropped)


def align_genes(src: str | os.PathLike, dest: str | os.PathLike, *, universe: list[str],
                aliases: dict[str, str] | None = None, chunk_size: int = DEFAULT_CHUNK,
                min_source_matched: float = 0.5, min_universe_matched: float = 0.02,
                uns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``src`` (canonical, source genes) as ``dest`` in universe order; returns the alignment report."""
    with H5adReader(src) as reader:
        source_genes = [str(g) for g in reader.var_names]
        plan = plan_alignment(source_genes, universe, aliases)
        placed = len(source_genes) - len(plan.dropped)
        src_frac = placed / max(1, len(source_genes))
        uni_frac = placed / max(1, len(universe))
        example = ", ".join(source_genes[:5])
        if src_frac < min_source_matched:
            raise ContractError(src, "var_names", f"only {placed}/{len(source_genes)} source genes "
                                f"({src_frac:.1%}) are in the universe of {len(universe)} genes (threshold "
                                f"stage1.universe.min_source_matched={min_source_matched}); source genes look like "
                                f"[{example}]", "use HGNC symbols (map Ensembl IDs first), pick the right universe, "
                                "or lower the threshold")
        if uni_frac < min_universe_matched:
            raise ContractError(src, "var_names", f"only {placed} of the {len(universe)} universe genes "
                                f"({uni_frac:.2%}) are measured (threshold stage1.universe.min_universe_matched="
                                f"{min_universe_matched})", "check the universe choice or lower the threshold")
        S = plan.selection_matrix()
        var = pd.DataFrame(index=pd.Index(universe))
        var["in_source"] = plan.source_index >= 0
        var["source_name"] = [source_genes[j] if j >= 0 else "" for j in plan.source_index]
        obs = reader.obs
        meta = dict(uns or {})
        layers = {"counts": np.int32} if "counts" in reader.layers() else {}
        with H5adWriter(dest, obs=obs, var=var, uns=meta, layers=layers, obsm=reader.carried_obsm()) as writer:
            for start, stop, block in reader.iter_chunks(chunk_size):
                x = (block @ S).tocsr().astype(np.float32)
                x.sort_indices()
                if layers:
                    c = (reader.read_rows(start, stop, "counts") @ S).tocsr().astype(np.int32)
                    writer.append(x, counts=c)
                else:
                    writer.append(x)
        targets = sorted({g for t in obs["target_gene"].unique() if t != CONTROL_LABEL for g in t.split(COMBO_SEP)})
        uni_set = set(universe)
    return {
        "universe_size": len(universe), "source_genes": len(source_genes), "matched": plan.n_matched,
        "rescued_by_alias": len(plan.rescued), "rescued_pairs": dict(sorted(plan.rescued.items())),
        "filled_with_zeros": plan.n_filled, "dropped": len(plan.dropped), "dropped_genes": plan.dropped[:200],
        "source_matched_fraction": round(src_frac, 6), "universe_matched_fraction": round(uni_frac, 6),
        "target_genes": len(targets), "target_genes_not_in_universe": [t for t in targets if t not in uni_set],
        "order_check": "var_names equal the universe, in order",
    }
