"""Chunked sums of a streamed matrix per group of cells: the one kernel behind pseudobulk means
(:mod:`pertpipe.data.pseudobulk`), the training summary (:mod:`pertpipe.models.summary`) and the context statistics
(:mod:`pertpipe.data.zscores`). A block is summed by a sparse indicator product, so a chunk is never densified."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class GroupSums:
    names: np.ndarray  # the sorted group labels
    codes: np.ndarray  # [cells] each cell's group index
    sums: np.ndarray  # [groups, genes] float64
    squares: np.ndarray | None  # [groups, genes] sums of squares (when asked)
    n: np.ndarray  # [groups] cells per group

    def means(self) -> np.ndarray:
        return self.sums / self.n[:, None]


def group_sums(reader, labels, *, chunk_size: int, layer: str | None = None, squares: bool = False) -> GroupSums:
    """Per group of ``labels`` (one per cell of the open :class:`~pertpipe.core.h5io.H5adReader`), the float64 sums
    of X (or ``layer``) and, with ``squares``, of its squares, read ``chunk_size`` cells at a time."""
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    s1 = np.zeros((len(names), reader.n_vars), dtype=np.float64)
    s2 = np.zeros((len(names), reader.n_vars), dtype=np.float64) if squares else None
    for start, stop, block in reader.iter_chunks(chunk_size, layer=layer):
        c = codes[start:stop]
        ind = sp.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(len(names), len(c)))
        b = block.astype(np.float64)
        s1 += (ind @ b).toarray()
        if squares:
            s2 += (ind @ b.multiply(b)).toarray()
    return GroupSums(names, codes, s1, s2, np.bincount(codes, minlength=len(names)))
