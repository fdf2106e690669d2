"""The one PCA helper: principal axes of a dense matrix without a full SVD of it when it is large (the VCC's 18,080
genes make that minutes and gigabytes): a randomized range finder with power iterations, exact SVD for small inputs.
Every model and the spatial branch take their PCA / SVD axes from here."""

from __future__ import annotations

import os

import numpy as np

EXACT_BELOW = 50_000_000  # elements: below this the exact SVD is cheap (~400 MB of float64)


def top_components(x: np.ndarray, d: int, *, seed: int = 0, oversample: int = 10, power: int = 4,
                   fix_signs: bool = True) -> np.ndarray:
    """The first ``d`` right singular vectors of ``x`` (rows already centred) as rows [d x columns].

    Above :data:`EXACT_BELOW` elements: Halko et al.'s randomized SVD (range of ``x @ Omega`` refined by
    ``power`` QR-stabilised power iterations, then the SVD of the small projection), in float32, so memory is
    ``x`` plus n x (d + oversample). With ``fix_signs`` each axis's sign is fixed (largest entry positive), so the
    result is a function of ``x`` and ``seed``; without, LAPACK's signs are kept.
    """
    n, g = x.shape
    d = max(1, min(d, min(n, g) - 1)) if min(n, g) > 1 else 1
    if x.size < EXACT_BELOW or min(n, g) <= 2 * (d + oversample):
        vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)[2][:d]
    else:
        a = np.asarray(x, dtype=np.float32)
        rng = np.random.default_rng(seed)
        y = a @ rng.standard_normal((g, d + oversample)).astype(np.float32)
        for _ in range(power):
            q = np.linalg.qr(y)[0]
            y = a @ np.linalg.qr(a.T @ q)[0]
        q = np.linalg.qr(y)[0]
        vt = np.linalg.svd((q.T @ a).astype(np.float64), full_matrices=False)[2][:d]
    if not fix_signs:
        return vt
    flip = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return vt * np.where(flip == 0, 1.0, flip)[:, None]


def left_axes(x: np.ndarray, d: int) -> np.ndarray:
    """The first ``d`` left singular vectors of ``x`` as columns [rows x d] (exact SVD; ``d`` capped at
    columns - 1), e.g. gene axes of a genes x perturbations response matrix."""
    d = max(1, min(d, x.shape[1] - 1))
    return np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)[0][:, :d]


def pca_gene_embedding(train: str | os.PathLike, *, k: int, max_cells: int, seed: int) -> np.ndarray:
    """Gene loadings [genes x k] of a PCA of (a seeded subsample of) the training cells' log1p X."""
    from pertpipe.core.h5io import H5adReader

    rng = np.random.default_rng(seed)
    with H5adReader(train) as r:
        n = r.n_obs
        take = np.zeros(n, dtype=bool)
        take[rng.choice(n, size=min(n, max_cells), replace=False)] = True
        x = r.read_masked(take).toarray().astype(np.float64)
    x -= x.mean(axis=0, keepdims=True)
    return top_components(x, k, seed=seed, fix_signs=False).T  # genes x k, orthonormal columns
