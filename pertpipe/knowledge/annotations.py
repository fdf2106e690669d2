"""Readers for NCBI gene_info, NCBI gene2go and GO OBO files, with errors that give the line number.

The OBO reader is a small parser of the subset of OBO 1.2 the Gene Ontology uses ([Term] stanzas with
id, name, namespace, def, is_a, relationship, is_obsolete, alt_id); ``Ontology.ancestors`` follows is_a,
part_of and the regulates family upward.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pertpipe.errors import ContractError

UPWARD_RELATIONS = frozenset({"is_a", "part_of", "regulates", "positively_regulates", "negatively_regulates"})


def _open(path: str | os.PathLike):
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rt", encoding="utf-8") if magic == b"\x1f\x8b" else open(path, encoding="utf-8")


@dataclass
class Term:
    id: str
    name: str = ""
    namespace: str = ""
    definition: str = ""
    parents: list[tuple[str, str]] = field(default_factory=list)  # (relation, parent id)
    obsolete: bool = False


class Ontology:
    """GO terms by id, with memoised upward closure."""

    def __init__(self, terms: dict[str, Term], alt_ids: dict[str, str] | None = None) -> None:
        self.terms = terms
        self.alt_ids = alt_ids or {}
        self._anc: dict[str, frozenset[str]] = {}

    def resolve(self, term_id: str) -> str:
        return self.alt_ids.get(term_id, term_id)

    def __contains__(self, term_id: str) -> bool:
        return self.resolve(term_id) in self.terms

    def ancestors(self, term_id: str, relations: frozenset[str] = UPWARD_RELATIONS) -> frozenset[str]:
        """The term and every term above it through ``relations`` (iterative, memoised)."""
        term_id = self.resolve(term_id)
        if term_id in self._anc:
            return self._anc[term_id]
        stack, seen = [term_id], {term_id}
        while stack:
            t = stack.pop()
            if t in self._anc:  # reuse a finished closure
                seen |= self._anc[t]
                continue
            term = self.terms.get(t)
            if term is None:
                continue
            for rel, parent in term.parents:
                if rel in relations and parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        result = frozenset(seen)
        if relations == UPWARD_RELATIONS:
            self._anc[term_id] = result
        return result


def parse_obo(path: str | os.PathLike) -> Ontology:
    """Parse an OBO file (plain or gzip); malformed lines raise :class:`ContractError` with the line number."""
    terms: dict[str, Term] = {}
    alt: dict[str, str] = {}
    cur: Term | None = None
    in_term = False
    with _open(path) as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line or line.startswith("!"):
                    continue
                if line.startswith("["):
                    if cur is not None:
                        terms[cur.id] = cur
                    cur = None
                    in_term = line == "[Term]"
                    if not line.endswith("]"):
                        raise ContractError(path, f"line {lineno}", f"malformed stanza header '{line[:40]}'",
                                            "restore the OBO file (re-download it)")
                    continue
                if not in_term:
                    continue
                if ":" not in line:
                    raise ContractError(path, f"line {lineno}", f"expected 'tag: value', got '{line[:60]}'",
                                        "restore the OBO file (re-download it)")
                tag, value = line.split(":", 1)
                value = value.strip()
                if tag == "id":
                    if cur is not None:
                        raise ContractError(path, f"line {lineno}", "second id in one [Term]", "restore the file")
                    cur = Term(id=value)
                    continue
                if cur is None:
                    raise ContractError(path, f"line {lineno}", f"'{tag}' before the term's id", "restore the file")
                if tag == "name":
                    cur.name = value
                elif tag == "namespace":
                    cur.namespace = value
                elif tag == "def":
                    if not value.startswith('"') or value.count('"') < 2:
                        raise ContractError(path, f"line {lineno}", "def without a quoted text", "restore the file")
                    cur.definition = value[1:value.rindex('"')].replace('\\"', '"')
                elif tag == "is_a":
                    cur.parents.append(("is_a", value.split("!")[0].split()[0]))
                elif tag == "relationship":
                    parts = value.split("!")[0].split()
                    if len(parts) < 2:
                        raise ContractError(path, f"line {lineno}", f"relationship needs a type and a target: "
                                            f"'{value[:60]}'", "restore the file")
                    cur.parents.append((parts[0], parts[1]))
                elif tag == "is_obsolete":
                    cur.obsolete = value == "true"
                elif tag == "alt_id":
                    alt[value] = cur.id
        except UnicodeDecodeError as exc:
            raise ContractError(path, "file", f"not a text OBO file ({exc})", "restore the file") from exc
        except (OSError, EOFError) as exc:
            raise ContractError(path, "file", f"cannot be read ({exc})", "restore the file (re-download it)") from exc
    if cur is not None:
        terms[cur.id] = cur
    if not terms:
        raise ContractError(path, "file", "no [Term] stanzas", "give a GO OBO file (go-basic.obo)")
    return Ontology(terms, alt)


_GENE2GO_COLS = ["tax_id", "gene_id", "go_id", "evidence", "qualifier", "go_term", "pubmed", "category"]


def read_gene2go(path: str | os.PathLike, *, tax_id: int = 9606) -> pd.DataFrame:
    """NCBI gene2go rows of ``tax_id`` (NOT-qualified annotations dropped): gene_id, go_id, evidence, category."""
    rows = []
    with _open(path) as fh:
        header = fh.readline()
        if not header.startswith("#tax_id"):
            raise ContractError(path, "line 1", f"not a gene2go header: '{header[:50].strip()}'",
                                "give NCBI gene2go(.gz) (#tax_id GeneID GO_ID Evidence Qualifier GO_term PubMed Category)")
        want = str(tax_id)
        for lineno, line in enumerate(fh, start=2):
            if not line.startswith(want):
                if line.strip() and not line.split("\t", 1)[0].isdigit():
                    raise ContractError(path, f"line {lineno}", f"tax_id is not a number: '{line[:40].strip()}'",
                                        "restore the file (re-download it)")
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 8 or parts[0] != want:
                if parts[0] == want:
                    raise ContractError(path, f"line {lineno}", f"{len(parts)} columns, expected 8",
                                        "restore the file (re-download it)")
                continue
            if not parts[2].startswith("GO:"):
                raise ContractError(path, f"line {lineno}", f"GO_ID '{parts[2]}' is not a GO id", "restore the file")
            if "NOT" in parts[4]:
                continue
            rows.append((int(parts[1]), parts[2], parts[3], parts[7]))
    return pd.DataFrame(rows, columns=["gene_id", "go_id", "evidence", "category"])


def read_gene_info(path: str | os.PathLike) -> pd.DataFrame:
    """NCBI gene_info: gene_id, symbol, synonyms, full_name (description), type_of_gene."""
    with _open(path) as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
        need = ["GeneID", "Symbol", "Synonyms", "description", "type_of_gene"]
        missing = [c for c in need if c not in header]
        if missing:
            raise ContractError(path, "line 1", f"gene_info header lacks {missing}", "give NCBI gene_info(.gz)")
        idx = [header.index(c) for c in need]
        rows = []
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(header):
                raise ContractError(path, f"line {lineno}", f"{len(parts)} columns, header has {len(header)}",
                                    "restore the file (re-download it)")
            try:
                gid = int(parts[idx[0]])
            except ValueError as exc:
                raise ContractError(path, f"line {lineno}", f"GeneID '{parts[idx[0]]}' is not a number",
                                    "restore the file") from exc
            rows.append((gid, parts[idx[1]], parts[idx[2]], parts[idx[3]], parts[idx[4]]))
    return pd.DataFrame(rows, columns=["gene_id", "symbol", "synonyms", "full_name", "type_of_gene"])
