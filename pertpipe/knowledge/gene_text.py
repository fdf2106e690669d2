"""Per-gene functional text: symbol, full name, GO terms (name + definition) by aspect, optional summary."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pertpipe.knowledge.annotations import Ontology

ASPECTS = (("Process", "biological process"), ("Function", "molecular function"), ("Component", "cellular component"))


def map_symbols(universe: list[str], gene_info: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Universe symbol -> NCBI GeneID (exact symbol, else a unique synonym); the symbols left unmapped."""
    by_symbol = dict(zip(gene_info["symbol"], gene_info["gene_id"]))
    syn: dict[str, set[int]] = {}
    for gid, s in zip(gene_info["gene_id"], gene_info["synonyms"]):
        if s and s != "-":
            for a in s.split("|"):
                syn.setdefault(a, set()).add(int(gid))
    out, missing = {}, []
    for g in universe:
        if g in by_symbol:
            out[g] = int(by_symbol[g])
        elif len(syn.get(g, ())) == 1:
            out[g] = next(iter(syn[g]))
        else:
            missing.append(g)
    return out, missing


def build_gene_text(universe: list[str], gene_info: pd.DataFrame, gene2go: pd.DataFrame, ontology: Ontology, *,
                    summaries: dict[int, str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per universe gene: gene, gene_id, full_name, go_terms (ids), per-aspect text, summary, text."""
    ids, missing = map_symbols(universe, gene_info)
    names = dict(zip(gene_info["gene_id"], gene_info["full_name"]))
    terms_by_gene: dict[int, list[tuple[str, str]]] = {}
    for gid, go, cat in zip(gene2go["gene_id"], gene2go["go_id"], gene2go["category"]):
        terms_by_gene.setdefault(int(gid), []).append((ontology.resolve(go), cat))
    rows = []
    unknown_terms: set[str] = set()
    for g in universe:
        gid = ids.get(g)
        terms = sorted(set(terms_by_gene.get(gid, []))) if gid is not None else []
        by_aspect: dict[str, list[str]] = {a: [] for a, _ in ASPECTS}
        for go, cat in terms:
            t = ontology.terms.get(go)
            if t is None:
                unknown_terms.add(go)
                continue
            by_aspect.setdefault(cat, []).append(f"{t.name}: {t.definition}" if t.definition else t.name)
        full = names.get(gid, "") if gid is not None else ""
        summary = (summaries or {}).get(gid, "") if gid is not None else ""
        parts = [f"{g}" + (f" ({full})" if full and full != "-" else "")]
        if summary:
            parts.append(f"Summary: {summary}")
        for a, label in ASPECTS:
            if by_aspect.get(a):
                parts.append(f"{label.capitalize()}: " + "; ".join(by_aspect[a]))
        rows.append({"gene": g, "gene_id": gid if gid is not None else -1, "full_name": full if full != "-" else "",
                     "go_terms": [go for go, _ in terms], "process": "; ".join(by_aspect["Process"]),
                     "function": "; ".join(by_aspect["Function"]), "component": "; ".join(by_aspect["Component"]),
                     "summary": summary, "text": "\n".join(parts)})
    table = pd.DataFrame(rows)
    report = {"genes": len(universe), "in_gene_info": len(ids), "absent_from_gene_info": len(missing),
              "absent_examples": missing[:50], "with_go_terms": int(sum(bool(r["go_terms"]) for r in rows)),
              "go_terms_not_in_ontology": len(unknown_terms)}
    return table, report
