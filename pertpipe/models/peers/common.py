"""What the peer-model wrappers (GEARS, STATE) share: the install check, the licence record, and the training
cells and genes handed to a peer's own training code."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import numpy as np
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL, perturbation_genes
from pertpipe.errors import ConfigError

PEERS_EXTRA = "pip install 'pertpipe[peers]'"


def require_peer(model: str, modules: tuple[str, ...], packages: str, licence: str) -> None:
    """Raise a ConfigError saying how to install a peer's packages (and under which licence) when one of ``modules``
    is not importable. Peers are never installed by default (`make run` installs the core lock only)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"model '{model}' needs {packages} (licence: {licence}; missing modules: {missing}). Fix: "
                          f"install with {PEERS_EXTRA} (or pip install {packages}; the test tier "
                          f"requirements-test.txt pins them), or remove '{model}' from config models:")


def peer_record(distribution: str, licence: str, source: str) -> dict[str, str]:
    """Package, version, licence and source of a peer, for train_log.json and the report."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    return {"package": distribution, "version": version, "licence": licence, "source": source}


def training_cells(train: str | os.PathLike, genes: list[str], target: np.ndarray, usable: np.ndarray, *,
                   max_cells: int, n_genes: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The training rows and genes a peer trains on: ``(X [rows x kept genes] float32 CSR, rows, kept gene idx)``.

    Rows: the ``usable`` cells, at most ``max_cells`` drawn at random (seeded) with the controls kept (at least a
    fifth of the draw). Genes: the ``n_genes`` most variable among those cells plus every gene a drawn cell's
    target names (all genes when ``n_genes`` is 0 or covers them). Read from disk for the drawn rows only.
    """
    from pertpipe.core.h5io import RowReader

    rows = np.flatnonzero(usable)
    rng = np.random.default_rng(seed)
    if max_cells and len(rows) > max_cells:
        ctrl = rows[target[rows] == CONTROL_LABEL]
        pert = rows[target[rows] != CONTROL_LABEL]
        n_ctrl = min(len(ctrl), max(max_cells // 5, max_cells - len(pert)))
        rows = np.sort(np.concatenate([rng.choice(ctrl, n_ctrl, replace=False),
                                       rng.choice(pert, min(len(pert), max_cells - n_ctrl), replace=False)]))
    X = RowReader(train)[rows].astype(np.float32)
    keep = np.arange(len(genes))
    if n_genes and n_genes < len(genes):
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
        top = set(np.argsort(-var, kind="stable")[:n_genes].tolist())
        gidx = {g: i for i, g in enumerate(genes)}
        top |= {gidx[g] for t in set(target[rows]) for g in perturbation_genes(t) if g in gidx}
        keep = np.array(sorted(top))
    return X[:, keep].tocsr(), rows, keep
