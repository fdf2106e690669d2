"""Functional facets of each gene: K texts, one per facet of resources/facets.yaml.

Extractor ``go`` (default, deterministic, offline): facet k of gene g is made of g's annotated GO terms
whose ancestors (is_a, part_of, regulates family) include one of facet k's roots, written as
"name: definition" and joined, deduplicated, sorted by name, capped at ``max_chars`` on a term boundary;
``<NONE>`` when the gene has no such term. Extractor ``llm`` lives in :mod:`pertpipe.knowledge.llm`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pertpipe.errors import ConfigError
from pertpipe.knowledge.annotations import Ontology
from pertpipe.knowledge.types import NONE, Facet

__all__ = ["NONE", "Facet", "coverage", "extract_facets", "go_facets", "load_facets"]



def load_facets(path: str | os.PathLike, ontology: Ontology | None = None) -> list[Facet]:
    """Facet definitions; with ``ontology``, every root must be a GO term in it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the facet list ({exc}). Fix: give a YAML file with `facets:`") from exc
    items = raw.get("facets")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: `facets` must be a non-empty list of {{name, description, go_roots}}")
    facets, seen = [], set()
    for i, f in enumerate(items):
        if not isinstance(f, dict) or not f.get("name") or not f.get("go_roots"):
            raise ConfigError(f"{path}: facets[{i}] needs `name` and `go_roots`")
        if f["name"] in seen:
            raise ConfigError(f"{path}: facets[{i}]: duplicate facet name '{f['name']}'")
        seen.add(f["name"])
        roots = tuple(f["go_roots"])
        if ontology is not None:
            bad = [r for r in roots if r not in ontology]
            if bad:
                raise ConfigError(f"{path}: facet '{f['name']}': unknown GO root(s) {bad} (not in the ontology). "
                                  "Fix: use GO ids present in go-basic.obo")
        facets.append(Facet(f["name"], f.get("description", ""), roots))
    return facets


def _cap(pieces: list[str], max_chars: int) -> str:
    out, n = [], 0
    for p in pieces:
        if out and n + 2 + len(p) > max_chars:
            break
        out.append(p if len(p) <= max_chars else p[: max_chars - 1] + "…")
        n += len(out[-1]) + 2
    return "; ".join(out)


def go_facets(gene_text: pd.DataFrame, ontology: Ontology, facets: list[Facet], *,
              max_chars: int = 1500) -> pd.DataFrame:
    """Long table (gene, facet, text, source) with exactly one row per gene and facet."""
    root_sets = [frozenset(ontology.resolve(r) for r in f.roots) for f in facets]
    rows = []
    for gene, terms in zip(gene_text["gene"], gene_text["go_terms"]):
        hits: list[dict[str, str]] = [{} for _ in facets]
        for go in terms:
            t = ontology.terms.get(go)
            if t is None or t.obsolete:
                continue
            anc = ontology.ancestors(go)
            for k, roots in enumerate(root_sets):
                if anc & roots:
                    hits[k][t.name] = f"{t.name}: {t.definition}" if t.definition else t.name
        for k, f in enumerate(facets):
            pieces = [hits[k][n] for n in sorted(hits[k])]
            rows.append((gene, f.name, _cap(pieces, max_chars) if pieces else NONE, "go"))
    return pd.DataFrame(rows, columns=["gene", "facet", "text", "source"])


def coverage(facet_table: pd.DataFrame, facets: list[Facet]) -> dict[str, Any]:
    """Genes with >= 1 facet, and genes per facet."""
    known = facet_table[facet_table["text"] != NONE]
    n_genes = facet_table["gene"].nunique()
    per = known.groupby("facet")["gene"].nunique().reindex([f.name for f in facets], fill_value=0)
    with_any = known["gene"].nunique()
    return {"genes": int(n_genes), "genes_with_any_facet": int(with_any),
            "fraction_with_any_facet": round(with_any / max(1, n_genes), 6),
            "genes_per_facet": {k: int(v) for k, v in per.items()},
            "fraction_per_facet": {k: round(int(v) / max(1, n_genes), 6) for k, v in per.items()}}


def extract_facets(gene_text: pd.DataFrame, ontology: Any, facets: list[Facet], *, extractor: str,
                   max_chars: int, llm: dict[str, Any] | None = None, prompt_path: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike = "resources/cache") -> tuple[pd.DataFrame, dict[str, Any]]:
    """The facet table by ``extractor`` (``go``: from the GO hierarchy; ``llm``: an OpenAI-compatible endpoint),
    and the extractor's provenance (LLM model, prompt hash, failures; empty for ``go``)."""
    if extractor == "go":
        return go_facets(gene_text, ontology, facets, max_chars=max_chars), {}
    if extractor != "llm":
        raise ConfigError(f"knowledge.extractor is '{extractor}'. Fix: use go or llm")
    from pertpipe.knowledge.llm import LLMSettings, llm_facets

    cfg = dict(llm or {})
    if not cfg.get("base_url") or not cfg.get("model"):
        raise ConfigError("knowledge.extractor is 'llm' but knowledge.llm.base_url / model are not set. "
                          "Fix: give the endpoint (e.g. http://127.0.0.1:8000/v1) and the model name")
    settings = LLMSettings(**{k: v for k, v in cfg.items() if k != "prompt"})
    template = Path(prompt_path or cfg.get("prompt")).read_text()
    return llm_facets(gene_text, facets, settings, template=template, cache_dir=Path(cache_dir) / "llm_facets")
