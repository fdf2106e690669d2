"""The ridge solve, once: W = (XᵀX + αI)⁻¹ XᵀY in primal form (features < samples), the same solve from a formed
Gram matrix (labels: XᵀX once per line and α grid; the transfer ridge: the dual K = XXᵀ), and α by k-fold CV."""

from __future__ import annotations

import numpy as np


def ridge_solve(gram: np.ndarray, rhs: np.ndarray, alpha: float) -> np.ndarray:
    """(gram + αI)⁻¹ rhs: the primal solve from XᵀX and XᵀY, or the dual one from K = XXᵀ and Y."""
    return np.linalg.solve(gram + alpha * np.eye(gram.shape[0]), rhs)


def ridge_fit(X: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """W minimising |Y - X W|² + α|W|² (X, Y centred)."""
    return ridge_solve(X.T @ X, X.T @ Y, alpha)


def cv_alpha(X: np.ndarray, Y: np.ndarray, alphas: tuple[float, ...], folds: int, seed: int) -> tuple[float, dict]:
    """The α of ``alphas`` with the lowest ``folds``-fold CV error (centring inside each fold); with fewer than two
    samples the middle α, untested."""
    n = X.shape[0]
    k = min(folds, n)
    if k < 2:
        return float(alphas[len(alphas) // 2]), {}
    order = np.random.default_rng(seed).permutation(n)
    errs = {}
    for a in alphas:
        sse = 0.0
        for f in range(k):
            te = order[f::k]
            tr = np.setdiff1d(order, te)
            xm, ym = X[tr].mean(0), Y[tr].mean(0)
            W = ridge_fit(X[tr] - xm, Y[tr] - ym, a)
            sse += float(((Y[te] - ym - (X[te] - xm) @ W) ** 2).sum())
        errs[f"{a:g}"] = sse / Y.size
    best = min(errs, key=errs.get)
    return float(best), errs
