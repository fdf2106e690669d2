"""Principal axes of a dense cell sample without a full SVD of it (the VCC's 18,080 genes make that minutes and
gigabytes): a randomized range finder with power iterations, exact SVD for small inputs."""

from __future__ import annotations

import numpy as np

EXACT_BELOW = 50_000_000  # elements: below this the exact SVD is cheap (~400 MB of float64)


def top_components(x: np.ndarray, d: int, *, seed: int = 0, oversample: int = 10, power: int = 4) -> np.ndarray:
    """The first ``d`` right singular vectors of ``x`` (rows already centred) as rows [d x columns].

    Above :data:`EXACT_BELOW` elements: Halko et al.'s randomized SVD (range of ``x @ Omega`` refined by
    ``power`` QR-stabilised power iterations, then the SVD of the small projection), in float32, so memory is
    ``x`` plus n x (d + oversample). Each axis's sign is fixed (largest entry positive), so the result is a
    function of ``x`` and ``seed``.
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
    flip = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return vt * np.where(flip == 0, 1.0, flip)[:, None]
