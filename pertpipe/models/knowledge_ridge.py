"""``knowledge_ridge``: ridge regression from the perturbed gene's facet embeddings to its mean shift (GenePert's
design on our facets).

Each gene's feature vector is the mean of its facet embeddings over the facets that have text (the knowledge stage's
[genes x facets x dim] tensor); a combination's is the sum of its genes'. Ridge maps centred features to the training
targets' mean shifts (cell_mean's per-target deltas, centred), in closed form:

    W = (XᵀX + αI)⁻¹ Xᵀ (Y - ȳ),    prediction = cell-type mean shift + (x - x̄) W

α is chosen by ``folds``-fold cross-validation over the training targets (mean squared error of the shift) from
``alphas`` unless ``ridge`` fixes it: the choice is made on training data only. A target whose genes have no text
gets x = x̄, i.e. the cell-type mean (:mod:`pertpipe.models.celltype_mean`), and the predict step notes it.

On a labels dataset (PerturbQA) it is the GenePert / GenePT-style baseline of the labels task: ridge from the same
pooled facet features to the perturbation's DE and direction label vectors, per line, α chosen on a validation
share of the training perturbations (:class:`pertpipe.models.labels.RidgeLearner`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe import perturbation_genes
from pertpipe.data.labels import is_labels_file
from pertpipe.models.base import PredictsLabels, PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.core.params import positive
from pertpipe.core.ridge import cv_alpha, ridge_fit

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


@register_model("knowledge_ridge")
class KnowledgeRidgeModel(PredictsShift, PredictsLabels):
    """Ridge from facet-embedding features of the perturbed gene(s) to the mean shift, on top of the cell-type mean."""

    baseline = True
    tasks = ("cells", "labels")
    label_learner = "knowledge_ridge"

    inputs = ("knowledge",)

    @dataclass
    class Params:
        ridge: float | None = field(default=None, metadata={"ge": 0})  # null: chosen by CV from ALPHAS
        folds: int = positive(5)
        val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})  # labels: α's validation share

    def _features(self, target: str) -> tuple[np.ndarray, bool]:
        x = np.zeros(self.emb.shape[1])
        known = False
        for g in perturbation_genes(target):
            i = self.emb_index.get(g)
            if i is not None and self.has_text[i]:
                x += self.emb[i]
                known = True
        return x, known

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        from pertpipe.models.facet_lookup import FacetLookup

        if is_labels_file(inputs.train):
            return self.fit_labels(inputs)

        t0 = time.perf_counter()
        s = self._summarise(inputs)
        lookup = FacetLookup.load(inputs.need("knowledge", "knowledge_ridge"))
        return {**self.fit_summary(s, lookup), "fit_s": round(time.perf_counter() - t0, 3)}

    def fit_summary(self, s: Any, lookup: Any) -> dict[str, Any]:
        """Fit from a training summary and the facet lookup (also the cross-fitted prior candidate of DyGenePT and
        CFM-VC)."""
        self.genes = s.genes
        self.per_ct, self.default = s.mean_shift("cell_type")
        w = lookup.mask[:, :, None]
        self.emb = ((lookup.tensor * w).sum(1) / np.maximum(w.sum(1), 1)).astype(np.float64)  # genes x dim
        self.has_text = lookup.mask.sum(1) > 0
        self.emb_index = dict(lookup.genes)
        Y = s.target_deltas()
        feats = [self._features(t) for t in Y.index]
        keep = np.array([k for _, k in feats])
        X = np.vstack([f for f, _ in feats])[keep] if keep.any() else np.zeros((0, self.emb.shape[1]))
        Yk = Y.to_numpy()[keep]
        if self.params.ridge is not None:
            alpha, cv = float(self.params.ridge), {}
        else:
            alpha, cv = cv_alpha(X, Yk, ALPHAS, self.params.folds, self.seed) if len(X) else (ALPHAS[0], {})
        self.x_mean = X.mean(0) if len(X) else np.zeros(self.emb.shape[1])
        y_mean = Yk.mean(0) if len(X) else np.zeros(len(self.genes))
        self.W = ridge_fit(X - self.x_mean, Yk - y_mean, alpha) if len(X) > 1 else np.zeros((len(self.x_mean),
                                                                                              len(self.genes)))
        self.alpha = alpha
        return {"train_targets": int(len(Y)),
                "targets_with_text": int(keep.sum()), "alpha": alpha, "cv_mse_by_alpha": cv}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        x, known = self._features(target)
        base = np.asarray(self.per_ct.get(cell_type, self.default), dtype=np.float64)
        if not known:
            self.notes[f"{target}|{cell_type}"] = "no gene text: the cell-type mean"
            return base
        return base + (x - self.x_mean) @ self.W

    def state(self) -> dict[str, Any]:
        if self.labeler is not None:
            return self.labels_state()
        return {"per_ct": self.per_ct, "default": self.default, "emb": self.emb, "has_text": self.has_text,
                "emb_genes": list(self.emb_index), "x_mean": self.x_mean, "W": self.W, "alpha": self.alpha}

    def set_state(self, state: dict[str, Any]) -> None:
        if "labels" in state:
            return self.set_labels_state(state)
        self.per_ct = {k: np.asarray(v) for k, v in state["per_ct"].items()}
        self.default = np.asarray(state["default"])
        self.emb, self.has_text = np.asarray(state["emb"]), np.asarray(state["has_text"], bool)
        self.emb_index = {g: i for i, g in enumerate(state["emb_genes"])}
        self.x_mean, self.W, self.alpha = np.asarray(state["x_mean"]), np.asarray(state["W"]), float(state["alpha"])
