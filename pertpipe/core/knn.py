"""The facet kNN, once: a perturbation's unit vector from the facet tensor, its neighbours ranked by cosine, and the
softmax(similarity / τ) mix of what the neighbours carry. The cells prior (:class:`pertpipe.models.prior.FacetKNNPrior`)
and ctxfusion's fallback for a perturbation measured nowhere both mix through here."""

from __future__ import annotations

from typing import Any

import numpy as np


def target_vector(lookup: Any, label: str) -> np.ndarray:
    """Unit vector of a perturbation label: the mean of its genes' facet embeddings with text, summed over the genes
    of a combination (zeros when no facet has text). ``lookup.target(label)`` gives (facets, mask, _)."""
    f, m, _t = lookup.target(label)
    v = (f * m[..., None]).sum(axis=(0, 1)) / max(1.0, float(m.sum()))
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float64) if n > 0 else v.astype(np.float64)


def ranked(sims: np.ndarray) -> np.ndarray:
    """Indices from the most to the least similar (ties keep their order)."""
    return np.argsort(-np.asarray(sims), kind="stable")


def softmax_weights(sims: np.ndarray, tau: float) -> np.ndarray:
    """softmax(sims / τ), computed from the largest similarity down (no overflow)."""
    sims = np.asarray(sims, dtype=np.float64)
    w = np.exp((sims - sims.max()) / tau)
    return w / w.sum()


def mix(sims: np.ndarray, values: np.ndarray, tau: float) -> np.ndarray:
    """Σ_i softmax(sims / τ)_i values[i]: the neighbours' values weighted by similarity."""
    return softmax_weights(sims, tau) @ values
