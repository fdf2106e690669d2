"""Types shared by the knowledge modules (facet extraction by GO or an LLM, encoding): a facet and the empty text."""

from __future__ import annotations

from dataclasses import dataclass

NONE = "<NONE>"  # a gene's text for a facet it has nothing on


@dataclass(frozen=True)
class Facet:
    """One facet of gene knowledge: its name, what it covers, and its GO root terms (the GO extractor's)."""

    name: str
    description: str
    roots: tuple[str, ...]
