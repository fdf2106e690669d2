"""The facet tensor as the deep models read it: per-target facet embeddings, masks and target slots.

Shared by DyGenePT and CFM-VC, so a perturbation label (one gene, or ``A+B``) turns into the same arrays in
both: ``facets`` [2, K, D], ``mask`` [2, K] (1 = the facet has text) and ``slots`` [2] (1 = a target in that
slot). Genes absent from the knowledge stage get an all-zero mask (the models give them a learned vector).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from pertpipe import perturbation_genes

MAX_TARGETS = 2  # singles and doubles (the VCC and Norman designs)


@dataclass
class FacetLookup:
    genes: dict[str, int]
    names: list[str]
    tensor: np.ndarray  # [G, K, D] float32
    mask: np.ndarray  # [G, K] float32

    @classmethod
    def load(cls, knowledge: str | os.PathLike | dict[str, Any]) -> FacetLookup:
        """From ``facet_embeddings.pt`` (the knowledge stage's output) or its loaded dict."""
        from pertpipe.knowledge.encode import load_facet_tensor

        blob = knowledge if isinstance(knowledge, dict) else load_facet_tensor(knowledge)
        return cls({g: i for i, g in enumerate(blob["genes"])}, list(blob["facets"]),
                   blob["tensor"].float().numpy(), blob["mask"].float().numpy())

    @property
    def dim(self) -> int:
        return int(self.tensor.shape[2])

    def target(self, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(facets [2, K, D], mask [2, K], slots [2])`` of a perturbation label."""
        K, D = self.tensor.shape[1], self.tensor.shape[2]
        f = np.zeros((MAX_TARGETS, K, D), np.float32)
        m = np.zeros((MAX_TARGETS, K), np.float32)
        t = np.zeros(MAX_TARGETS, np.float32)
        for j, g in enumerate(perturbation_genes(label)[:MAX_TARGETS]):
            t[j] = 1
            i = self.genes.get(g)
            if i is not None:
                f[j], m[j] = self.tensor[i], self.mask[i]
        return f, m, t

    def state(self) -> dict[str, Any]:
        return {"facets": self.tensor, "fmask": self.mask, "facet_genes": list(self.genes),
                "facet_names": self.names}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FacetLookup:
        return cls({g: i for i, g in enumerate(state["facet_genes"])}, list(state["facet_names"]),
                   np.asarray(state["facets"]), np.asarray(state["fmask"]))
