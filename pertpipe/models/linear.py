"""``linear``: the low-rank linear baseline of Ahlmann-Eltze, Huber & Anders (2025).

    Y ≈ G W Pᵀ + b

Y [genes x training targets] are the targets' mean shifts (log1p, relative to controls of the same cell
type); G [genes x K] is a PCA gene embedding: by default (``embedding: pseudobulk``, as in the paper) the top
K left singular vectors of the centred training response matrix Y, so genes that respond together share a
direction; ``embedding: cells`` uses the PCA loadings of (a subsample of) the training cells instead.
P [targets x K] takes G's rows for each target's gene(s) (doubles: the sum of their genes' rows), so any gene
of the universe, seen or unseen, has an embedding; b is the mean shift. W is ridge-fitted in closed form:

    W = (GᵀG + λI)⁻¹ Gᵀ (Y - b) P (PᵀP + λI)⁻¹
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pertpipe import CONTROL_LABEL, perturbation_genes
from pertpipe.core.params import positive
from pertpipe.core.pca import left_axes, pca_gene_embedding
from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs


@register_model("linear")
class LinearModel(PredictsShift):
    """Reads only the training split (no facet tensor): its gene embedding comes from the responses or the cells."""
    train_resources = {"mem_mb": 16000, "runtime": 120}

    baseline = True

    @dataclass
    class Params:
        rank: int = positive(10)
        ridge: float = field(default=0.1, metadata={"ge": 0})
        embedding: Literal["pseudobulk", "cells"] = "pseudobulk"
        max_cells: int = positive(5000)

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self._summarise(inputs)
        G = (pca_gene_embedding(inputs.train, k=self.params.rank, max_cells=self.params.max_cells, seed=self.seed)
             if self.params.embedding == "cells" else None)
        return {**self.fit_summary(s, gene_embedding=G), "fit_s": round(time.perf_counter() - t0, 3)}

    def fit_summary(self, s: Any, lookup: Any = None, *, gene_embedding: np.ndarray | None = None) -> dict[str, Any]:
        """Fit from a training summary (also the cross-fitted prior candidate of DyGenePT and CFM-VC: there the
        pseudobulk embedding, which needs no cells). ``gene_embedding``: the cells' PCA loadings (``embedding:
        cells``)."""
        self.genes = s.genes
        Y = s.target_deltas()  # targets x genes
        self.gene_index = {g: i for i, g in enumerate(self.genes)}
        Y = self._mask_own_genes(Y)
        if self.params.embedding == "pseudobulk":
            Yc = (Y.to_numpy() - Y.to_numpy().mean(axis=0, keepdims=True)).T  # genes x targets
            self.G = left_axes(Yc, self.params.rank)  # genes x k
        elif self.params.embedding == "cells" and gene_embedding is not None:
            self.G = gene_embedding
        else:
            from pertpipe.errors import ConfigError
            raise ConfigError(f"model_params.linear.embedding is '{self.params.embedding}'. Fix: use pseudobulk or "
                              "cells")
        P = np.vstack([self._embed(t) for t in Y.index])  # targets x k
        Yt = Y.to_numpy().T  # genes x targets
        self.b = Yt.mean(axis=1)
        lam, k = self.params.ridge, self.G.shape[1]
        left = np.linalg.solve(self.G.T @ self.G + lam * np.eye(k), self.G.T @ (Yt - self.b[:, None]))
        self.W = np.linalg.solve((P.T @ P + lam * np.eye(k)).T, (left @ P).T).T
        fitted = self.G @ self.W @ P.T + self.b[:, None]
        resid = float(np.mean((fitted - Yt) ** 2))
        return {"train_targets": int(Y.shape[0]), "rank": int(k),
                "train_mse": resid, "baseline_mse": float(np.mean((Yt - self.b[:, None]) ** 2))}

    def _mask_own_genes(self, Y):
        """Replace each target's own gene(s) in its column by that gene's mean over the other targets.

        The knocked-down gene's own drop is a spike unique to its column; left in, it dominates the SVD and
        gives training targets embeddings of another kind than unseen ones (whose genes were never knocked).
        """
        Y = Y.copy()
        arr = Y.to_numpy()
        for r, t in enumerate(Y.index):
            for g in perturbation_genes(t):
                j = self.gene_index.get(g)
                if j is not None and arr.shape[0] > 1:
                    arr[r, j] = (arr[:, j].sum() - arr[r, j]) / (arr.shape[0] - 1)
        Y.iloc[:, :] = arr
        return Y

    def _embed(self, target: str) -> np.ndarray:
        e = np.zeros(self.G.shape[1])
        for g in perturbation_genes(target):
            i = self.gene_index.get(g)
            if i is not None:
                e += self.G[i]
        return e

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        if target == CONTROL_LABEL:
            return np.zeros(len(self.genes))
        return self.G @ self.W @ self._embed(target) + self.b

    def state(self) -> dict[str, Any]:
        return {"G": self.G, "W": self.W, "b": self.b}

    def set_state(self, state: dict[str, Any]) -> None:
        self.G, self.W, self.b = (np.asarray(state[k]) for k in ("G", "W", "b"))
        self.gene_index = {g: i for i, g in enumerate(self.genes)}
