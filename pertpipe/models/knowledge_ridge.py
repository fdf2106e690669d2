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
share of the training perturbations (:class:`RidgeLearner`, below).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe import perturbation_genes
from pertpipe.core.params import positive
from pertpipe.core.ridge import cv_alpha, ridge_fit, ridge_solve
from pertpipe.data.labels import LabelData
from pertpipe.models.base import PredictsLabels, PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.label_learner import Knowledge, Learner, label_targets, validation_split

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


LABEL_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


class RidgeLearner(Learner):
    """Per line: W = (XᵀX + αI)⁻¹ Xᵀ(Y - ȳ) on pooled facet features (unlabelled DE pairs count as 0, unlabelled
    direction pairs as 0.5: the perturbation's label vector as PerturbQA's files give it)."""

    name = "knowledge_ridge"

    def _fit_all(self, data: LabelData, X: np.ndarray, alphas: list[float]) -> dict[float, dict[str, Any]]:
        """alpha -> line -> kind -> (W, x̄, ȳ); XᵀY is formed once per line and kind, then solved per α."""
        fits: dict[float, dict[str, Any]] = {a: {} for a in alphas}
        for line in np.unique(data.lines):
            m = data.lines == line
            xm = X[m].mean(0)
            Xc = X[m] - xm
            XtX = Xc.T @ Xc
            for kind, codes, fill in (("de", data.de, 0.0), ("dir", data.dir, 0.5)):
                Y = label_targets(codes[m], fill)
                ym = Y.mean(0)
                XtY = Xc.T @ (Y - ym)
                for a in alphas:
                    W = ridge_solve(XtX, XtY, a)
                    fits[a].setdefault(str(line), {})[kind] = (W, xm, ym)
        return fits

    def _apply(self, fits: dict[str, Any], X: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = len(self.genes)
        out = {k: np.zeros((len(X), G), dtype=np.float32) for k in ("de", "dir")}
        for line in np.unique(lines):
            m = lines == line
            f = fits.get(str(line)) or next(iter(fits.values()))  # a line not in training: the first line's map
            for k in out:
                W, xm, ym = f[k]
                out[k][m] = ym + (X[m] - xm) @ W
        return out["de"], out["dir"]

    def fit(self, data: LabelData, kn: Knowledge | None, threads: int = 1) -> dict[str, Any]:
        self.genes = data.genes
        X, known = kn.pooled(data.perts)
        tr, va = validation_split(data, self.p.val_fraction, self.seed)
        alphas = [self.p.ridge] if self.p.ridge is not None else list(LABEL_ALPHAS)
        choice = {}
        if len(alphas) > 1 and va.any():
            by_alpha = self._fit_all(data.rows(tr), X[tr], alphas)
            for a in alphas:
                choice[f"{a:g}"] = self._validate(data.rows(va), self._apply(by_alpha[a], X[va],
                                                                              data.lines[va]))["auc_de"]
            self.alpha = float(max(choice, key=choice.get))
        else:
            self.alpha = float(alphas[0])
        self.fits = self._fit_all(data, X, [self.alpha])[self.alpha]
        self.kn = kn
        return {"alpha": self.alpha, "validation_auc_de": choice, "perturbations_without_text": int((~known).sum())}

    def predict(self, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X, _ = self.kn.pooled(perts)
        return self._apply(self.fits, X, np.asarray(lines))

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "genes": self.genes,
                "fits": {ln: {k: [np.asarray(a, dtype=np.float32) for a in v] for k, v in f.items()}
                         for ln, f in self.fits.items()}}

    def set_state(self, state: dict[str, Any], kn_blob: dict[str, Any] | None = None) -> None:
        self.alpha, self.genes = float(state["alpha"]), list(state["genes"])
        self.fits = {ln: {k: tuple(np.asarray(a, dtype=np.float64) for a in v) for k, v in f.items()}
                     for ln, f in state["fits"].items()}
        self.kn = Knowledge(kn_blob)


@register_model("knowledge_ridge")
class KnowledgeRidgeModel(PredictsShift, PredictsLabels):
    """Ridge from facet-embedding features of the perturbed gene(s) to the mean shift, on top of the cell-type mean."""

    baseline = True
    tasks = ("cells", "labels")
    label_learner = RidgeLearner

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

    def fit_profiles(self, inputs: ModelInputs) -> dict[str, Any]:
        from pertpipe.models.facet_lookup import FacetLookup

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

    def profiles_state(self) -> dict[str, Any]:
        return {"per_ct": self.per_ct, "default": self.default, "emb": self.emb, "has_text": self.has_text,
                "emb_genes": list(self.emb_index), "x_mean": self.x_mean, "W": self.W, "alpha": self.alpha}

    def set_profiles_state(self, state: dict[str, Any]) -> None:
        self.per_ct = {k: np.asarray(v) for k, v in state["per_ct"].items()}
        self.default = np.asarray(state["default"])
        self.emb, self.has_text = np.asarray(state["emb"]), np.asarray(state["has_text"], bool)
        self.emb_index = {g: i for i, g in enumerate(state["emb_genes"])}
        self.x_mean, self.W, self.alpha = np.asarray(state["x_mean"]), np.asarray(state["W"]), float(state["alpha"])
