"""A knowledge prior: an unseen perturbation acts like the training perturbations whose genes are most alike.

The similarity is that of the targets' facet embeddings (the knowledge stage's tensor: mean over a gene's
facets with text, summed over the genes of a double, cosine), the idea GEARS builds its GO graph on. The prior
shift of ``target`` in cell type ``ct`` is a softmax(similarity / τ)-weighted mean over its ``k`` nearest
training targets of their observed mean shift in ``ct`` (or, where a neighbour was not measured in ``ct``, its
cell-weighted shift over the cell types where it was). A target without any facet text gets the plain mean shift.

Training groups are (target, cell type); :meth:`FacetKNNPrior.shift` can leave one group out, so that a model
learning a residual over the prior sees, for each training group, the prior it would get were that group
unseen: for unseen-target splits that leaves the target out entirely, for cell-line holdout only its own cell
type (its other cell types stay, as they do for the held-out group at prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pertpipe import COMBO_SEP
from pertpipe.core.knn import mix, ranked, target_vector


@dataclass
class FacetKNNPrior:
    targets: list[str]  # training targets (rows of vectors)
    vectors: np.ndarray  # [T, D] unit vectors
    group_shift: dict[tuple[str, str], np.ndarray]  # (target, cell type) -> mean shift [G]
    group_cells: dict[tuple[str, str], int]
    mean_shift: np.ndarray  # [G]
    k: int = 5
    tau: float = 0.05
    lookup: Any = field(default=None, repr=False)  # the FacetLookup the vectors come from
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def vector(self, label: str) -> np.ndarray:
        if label not in self._cache:
            self._cache[label] = target_vector(self.lookup, label)
        return self._cache[label]

    @classmethod
    def fit(cls, summary: Any, lookup: Any, *, exclude: set[str] = frozenset(), k: int = 5,
            tau: float = 0.05) -> FacetKNNPrior:
        """From a :class:`~pertpipe.models.base.TrainingSummary`, leaving the targets in ``exclude`` out."""
        shift, cells = {}, {}
        for (t, ct), row in summary.target_ct_means.iterrows():
            if t in exclude:
                continue
            shift[(t, ct)] = row.to_numpy() - summary.control_ct_means.loc[ct].to_numpy()
            cells[(t, ct)] = int(summary.target_ct_counts.loc[(t, ct)])
        targets = sorted({t for t, _ in shift})
        vectors = np.stack([target_vector(lookup, t) for t in targets]) if targets else np.zeros((0, lookup.dim))
        mean = np.mean(list(shift.values()), axis=0) if shift else np.zeros(len(summary.genes))
        return cls(targets, vectors, shift, cells, mean, k, tau, lookup)

    def _shift_of(self, target: str, ct: str, leave_out: tuple[str, str] | None) -> np.ndarray | None:
        if (target, ct) in self.group_shift and (target, ct) != leave_out:
            return self.group_shift[(target, ct)]
        rows = [(s, self.group_cells[key]) for key, s in self.group_shift.items()
                if key[0] == target and key != leave_out]
        if not rows:
            return None
        w = np.array([n for _, n in rows], dtype=np.float64)
        return (np.stack([s for s, _ in rows]) * w[:, None]).sum(0) / w.sum()

    def shift(self, label: str, cell_type: str, *, leave_out: tuple[str, str] | None = None) -> np.ndarray:
        """Prior shift [G] of ``label`` in ``cell_type`` (``leave_out``: a training group to ignore)."""
        v = self.vector(label)
        if not v.any() or not self.targets:
            return self.mean_shift
        sims = self.vectors @ v
        cand, shifts = [], []
        for i in ranked(sims):
            s = self._shift_of(self.targets[i], cell_type, leave_out)
            if s is not None:
                cand.append(sims[i])
                shifts.append(s)
            if len(cand) == self.k:
                break
        if not cand:
            return self.mean_shift
        return mix(np.asarray(cand), np.stack(shifts), self.tau)

    def state(self) -> dict[str, Any]:
        return {"targets": self.targets, "vectors": self.vectors, "mean_shift": self.mean_shift, "k": self.k,
                "tau": self.tau, "groups": [list(g) for g in self.group_shift],
                "group_shift": np.stack(list(self.group_shift.values())) if self.group_shift else None,
                "group_cells": list(self.group_cells.values())}

    @classmethod
    def from_state(cls, s: dict[str, Any], lookup: Any) -> FacetKNNPrior:
        groups = [tuple(g) for g in s["groups"]]
        shifts = {g: np.asarray(s["group_shift"][i]) for i, g in enumerate(groups)}
        return cls(list(s["targets"]), np.asarray(s["vectors"]), shifts, dict(zip(groups, s["group_cells"])),
                   np.asarray(s["mean_shift"]), int(s["k"]), float(s["tau"]), lookup)


# -- the validated baseline prior ----------------------------------------------------------------------------------
PRIOR_CANDIDATES = ("knowledge_ridge", "knn", "linear", "celltype_mean", "additive")
_NEEDS_LOOKUP = {"knowledge_ridge", "knn"}


class _KNNCandidate:
    """The facet kNN as a prior candidate (the same interface as the baselines' ``predict_shift``)."""

    def __init__(self, k: int, tau: float) -> None:
        self.k, self.tau, self.knn = k, tau, None

    def fit_summary(self, summary: Any, lookup: Any) -> dict[str, Any]:
        self.knn = FacetKNNPrior.fit(summary, lookup, k=self.k, tau=self.tau)
        return {}

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        return self.knn.shift(target, cell_type)


class _Blend:
    """A convex blend of fitted candidates (the same interface): ``Σ w · predict_shift``."""

    def __init__(self, parts: list[tuple[str, float, Any]]) -> None:
        self.parts = parts

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        return sum(w * np.asarray(m.predict_shift(target, cell_type), dtype=np.float64) for _n, w, m in self.parts)


BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # the share of the best candidate in a blend with the second best


def _candidate_state(name: str, model: Any) -> dict[str, Any]:
    return {"model": model.knn.state() if name == "knn" else model.state(),
            "genes": list(getattr(model, "genes", [])), "k": getattr(model, "k", 5), "tau": getattr(model, "tau", 0.05)}


def _candidate_from_state(name: str, s: dict[str, Any], lookup: Any, seed: int) -> Any:
    model = _candidate(name, seed=seed, k=int(s["k"]), tau=float(s["tau"]))
    if name == "knn":
        model.knn = FacetKNNPrior.from_state(s["model"], lookup)
    else:
        model.genes = list(s["genes"])
        model.set_state(s["model"])
    return model


def _label(name: str) -> str:
    return "facet kNN prior" if name == "knn" else name


def _candidate(name: str, *, seed: int, k: int, tau: float) -> Any:
    if name == "knn":
        return _KNNCandidate(k, tau)
    from pertpipe.models.base import build_model

    return build_model(name, {}, seed=seed)  # the baseline with its default (validated-in-fit) settings


def fold_unit(how: str = "auto", train: Any = None) -> str:
    """What one cross-fitting fold leaves out: ``target`` (every cell type of a target: what an unseen target gets)
    or ``group`` (one (target, cell type): what a cell-line holdout gets, the target's other lines kept). ``auto``:
    the split's held-out unit recorded in the training file ``train`` (:func:`pertpipe.data.split.heldout_unit`),
    ``target`` where none is recorded (the stricter choice)."""
    if how != "auto":
        return how
    if train is not None and not hasattr(train, "read"):
        from pertpipe.data.split import read_heldout_unit

        return read_heldout_unit(train) or "target"
    return "target"


PRIOR_CRITERIA = ("score", "mse")
SCORE_GENES = 1000  # the most variable genes of the training shifts the discrimination term reads (VCC: 18,080 genes)


def _scaled(model: float, base: float, *, lower_is_better: bool) -> float:
    """cell-eval's scaling against the baseline (0 = baseline, 1 = perfect), clipped at 0."""
    if lower_is_better:
        return float(max(0.0, (base - model) / base)) if base > 0 else 0.0
    return float(max(0.0, (model - base) / (1.0 - base))) if base < 1 else 0.0


def validation_score(pred: np.ndarray, truth: np.ndarray, cell_types: np.ndarray) -> dict[str, float]:
    """An avg_score-like validation score of cross-fitted shifts ``pred`` against the observed ``truth`` (groups x
    genes), each term scaled against the cell-mean baseline (every other group's mean shift) as cell-eval scales VCC's
    metrics and clipped at 0, then averaged:

    * ``mae``: mean |pred - truth|;
    * ``pds``: 1 - the rank of a group's own truth among its cell type's truths by L1 distance from its prediction,
      over the number of groups (on the :data:`SCORE_GENES` most variable genes);
    * ``des``: the overlap of the top-k genes by |shift| of prediction and truth (k = 5 % of the genes, at least 10).
    """
    n, G = truth.shape
    base = (truth.sum(0, keepdims=True) - truth) / max(n - 1, 1)
    cols = np.argsort(-truth.var(0), kind="stable")[: min(G, SCORE_GENES)]
    k = min(G, max(10, G // 20))

    def terms(p: np.ndarray) -> tuple[float, float, float]:
        mae = float(np.abs(p - truth).mean())
        pds = []
        for ct in np.unique(cell_types):
            idx = np.flatnonzero(cell_types == ct)
            t = truth[np.ix_(idx, cols)]
            for r, g in enumerate(idx):
                d = np.abs(p[g, cols][None, :] - t).sum(1)
                pds.append(1.0 - float((d < d[r]).sum()) / len(idx))
        top_p = np.argsort(-np.abs(p), axis=1, kind="stable")[:, :k]
        top_t = np.argsort(-np.abs(truth), axis=1, kind="stable")[:, :k]
        des = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(top_p, top_t)]))
        return mae, float(np.mean(pds)), des

    m, b = terms(pred), terms(base)
    out = {"mae": _scaled(m[0], b[0], lower_is_better=True), "pds": _scaled(m[1], b[1], lower_is_better=False),
           "des": _scaled(m[2], b[2], lower_is_better=False)}
    out["score"] = float(np.mean(list(out.values())))
    return out


KINDS = ("single", "combo")  # perturbation kinds a prior may be chosen for separately
MIN_KIND_TARGETS = 8  # training targets of each kind needed to choose per kind (fewer: one choice for all)


def _kind(target: str) -> str:
    return "combo" if COMBO_SEP in target else "single"


class _ByKind:
    """One fitted prior per perturbation kind (the same interface): singles and combinations."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        return self.models[_kind(target)].predict_shift(target, cell_type)


@dataclass
class _Choice:
    """What won on a set of cross-fitted groups: one candidate, or a blend (``weights``: candidate -> share)."""

    name: str
    weights: dict[str, float]
    scores: dict[str, dict[str, float]]
    groups: int
    best_single: str = ""  # the best single candidate by the score (what a blend had to beat)

    @property
    def display(self) -> str:
        if self.weights:
            return "blend of " + " + ".join(f"{w:g} × {_label(c)}" for c, w in self.weights.items())
        return _label(self.name)

    def parts(self) -> dict[str, float]:
        return self.weights or {self.name: 1.0}


def _pick(candidates: tuple[str, ...], cross: dict[str, dict], errors: dict[str, float], groups: list,
          truth: Any, criterion: str, blend: bool) -> _Choice:
    """The best candidate on ``groups`` by ``criterion`` (``score``: :func:`validation_score`; ``mse``); with
    ``score`` and ``blend``, the blends of the two best at :data:`BLEND_WEIGHTS` compete and one is kept only when it
    scores above every single candidate. Adds the blends' cross-fitted shifts to ``cross``."""
    order = list(candidates)
    err = {c: float(np.mean([np.mean((cross[c][g] - truth.loc[g].to_numpy()) ** 2) for g in groups])) for c in order}
    if criterion != "score" or len(order) < 2:
        best = min(order, key=lambda c: (err[c], order.index(c)))
        return _Choice(best, {}, {}, len(groups), best)
    T = np.stack([truth.loc[g].to_numpy() for g in groups])
    cts = np.array([g[1] for g in groups])
    scores = {c: validation_score(np.stack([cross[c][g] for g in groups]), T, cts) for c in order}
    ranked_ = sorted(order, key=lambda c: (-scores[c]["score"], err[c], order.index(c)))
    best, weights = ranked_[0], {}
    if blend:
        a, b = ranked_[:2]
        for w in BLEND_WEIGHTS:
            name = f"{a}:{w:g}+{b}:{1 - w:g}"
            cross[name] = {**cross.get(name, {}), **{g: w * cross[a][g] + (1 - w) * cross[b][g] for g in groups}}
            errors[name] = float(np.mean([np.mean((cross[name][g] - truth.loc[g].to_numpy()) ** 2) for g in groups]))
            scores[name] = validation_score(np.stack([cross[name][g] for g in groups]), T, cts)
            if scores[name]["score"] > scores[best]["score"]:
                best, weights = name, {a: w, b: 1 - w}
    return _Choice(best, weights, scores, len(groups), ranked_[0])


def _choice_state(name: str, weights: dict[str, float], model: Any) -> dict[str, Any]:
    if weights:
        return {"name": name, "parts": [{"name": c, "weight": w, **_candidate_state(c, m)} for c, w, m in model.parts]}
    return {"name": name, **_candidate_state(name, model)}


def _choice_from_state(s: dict[str, Any], lookup: Any, seed: int) -> tuple[Any, dict[str, float]]:
    if s.get("parts"):
        parts = [(str(q["name"]), float(q["weight"]), _candidate_from_state(str(q["name"]), q, lookup, seed))
                 for q in s["parts"]]
        return _Blend(parts), {c: w for c, w, _m in parts}
    return _candidate_from_state(str(s["name"]), s, lookup, seed), {}


@dataclass
class BaselinePrior:
    """The strongest baseline an unseen perturbation can get, chosen on training data by cross-fitting.

    Every candidate of :data:`PRIOR_CANDIDATES` is fitted ``folds`` times, each time without one fold of training
    groups, and predicts that fold: so each training group has the prediction it would get were it unseen. The
    candidate with the best cross-fitted ``criterion`` is the prior: ``score`` (default) is the avg_score-like
    :func:`validation_score` the leaderboard ranks by (MAE, discrimination, top-gene overlap, each scaled against the
    cell-mean baseline), ``mse`` the mean squared error of the shifts (averaged over groups). With ``score`` the
    blends of the two best candidates compete too, and where training holds enough singles and combinations each
    kind gets its own choice (:meth:`choose`). The prior is then fitted on every training group for prediction, while
    training keeps the chosen candidate's cross-fitted shifts (:meth:`shift` with ``leave_out``), so a residual
    learned over the prior is learned over what unseen perturbations get.
    """

    name: str
    model: Any  # the chosen candidate (a blend, one per kind) fitted on every training group
    crossfit: dict[tuple[str, str], np.ndarray]  # (target, cell type) -> the chosen candidate's cross-fitted shift
    errors: dict[str, float]  # candidate -> cross-fitted MSE
    unit: str = "target"
    folds: int = 5
    lookup: Any = field(default=None, repr=False)
    criterion: str = "mse"
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # candidate -> validation_score terms
    weights: dict[str, float] = field(default_factory=dict)  # a blend's candidates and shares ({} for one candidate)
    kinds: dict[str, _Choice] = field(default_factory=dict)  # kind -> its choice, where chosen per kind
    best_single: str = ""  # the best single candidate (a blend had to beat it)

    @property
    def display_name(self) -> str:
        """How a leaderboard names a model that equals this prior (the facet kNN is no registered baseline; a blend
        names its shares; a prior per kind names both)."""
        if self.kinds:
            return f"{self.kinds['single'].display} for singles, {self.kinds['combo'].display} for combinations"
        return _Choice(self.name, self.weights, {}, 0).display

    @classmethod
    def choose(cls, summary: Any, lookup: Any, *, candidates: tuple[str, ...] | list[str] = PRIOR_CANDIDATES,
               folds: int = 5, unit: str = "target", seed: int = 0, k: int = 5, tau: float = 0.05,
               criterion: str = "score", blend: bool = True, by_kind: bool = True) -> BaselinePrior:
        """``unit``: ``target`` or ``group`` (resolve ``auto`` with :func:`fold_unit` first); ``criterion``: one of
        :data:`PRIOR_CRITERIA`. With ``score`` and two or more candidates:

        * ``blend``: the blends of the two best candidates at :data:`BLEND_WEIGHTS` compete with them on the same
          cross-fitted groups (a blend of two baselines is still a statistical predictor an unseen target gets; the
          shares are chosen on training groups only); a blend is kept only when it scores above every single one;
        * ``by_kind``: where training has at least :data:`MIN_KIND_TARGETS` targets of singles and of combinations,
          each kind is chosen on its own groups (``additive`` is what a combination of seen singles gets, rarely what
          an unseen single does)."""
        candidates = tuple(candidates)
        groups = list(summary.target_ct_means.index)
        keys = sorted({g[0] for g in groups}) if unit == "target" else groups
        order = np.random.default_rng(seed).permutation(len(keys))
        n_folds = max(2, min(folds, len(keys)))
        fold_of = {keys[j]: i % n_folds for i, j in enumerate(order)}
        truth = summary.group_deltas()
        cross: dict[str, dict[tuple[str, str], np.ndarray]] = {c: {} for c in candidates}
        for f in range(n_folds):
            held = [g for g in groups if fold_of[g[0] if unit == "target" else g] == f]
            if not held:
                continue
            sub = summary.without(set(held))
            for c in candidates:
                m = _candidate(c, seed=seed, k=k, tau=tau)
                m.fit_summary(sub, lookup)
                for t, ct in held:
                    cross[c][(t, ct)] = np.asarray(m.predict_shift(t, ct), dtype=np.float64)
        errors = {c: float(np.mean([np.mean((cross[c][g] - truth.loc[g].to_numpy()) ** 2) for g in groups]))
                  for c in candidates}
        per_kind = {kd: [g for g in groups if _kind(g[0]) == kd] for kd in KINDS}
        split = (by_kind and criterion == "score" and len(candidates) > 1
                 and all(len({g[0] for g in v}) >= MIN_KIND_TARGETS for v in per_kind.values()))
        fitted: dict[str, Any] = {}

        def fit(choice: _Choice) -> Any:
            for c in choice.parts():
                if c not in fitted:
                    fitted[c] = _candidate(c, seed=seed, k=k, tau=tau)
                    fitted[c].fit_summary(summary, lookup)
            return _Blend([(c, w, fitted[c]) for c, w in choice.weights.items()]) if choice.weights else \
                fitted[choice.name]

        if split:
            kinds = {kd: _pick(candidates, cross, dict(errors), per_kind[kd], truth, criterion, blend) for kd in KINDS}
            crossfit = {g: cross[kinds[_kind(g[0])].name][g] for g in groups}
            model: Any = _ByKind({kd: fit(ch) for kd, ch in kinds.items()})
            name = "; ".join(f"{kd}: {ch.name}" for kd, ch in kinds.items())
            return cls(name, model, crossfit, errors, unit, n_folds, lookup, criterion, {}, {}, kinds)
        choice = _pick(candidates, cross, errors, groups, truth, criterion, blend)
        return cls(choice.name, fit(choice), cross[choice.name], errors, unit, n_folds, lookup, criterion,
                   choice.scores, choice.weights, best_single=choice.best_single)

    @classmethod
    def fixed(cls, name: str, summary: Any, lookup: Any, **kw: Any) -> BaselinePrior:
        """One named candidate, still cross-fitted (its error is reported beside no others)."""
        return cls.choose(summary, lookup, candidates=(name,), **kw)

    def shift(self, target: str, cell_type: str, *, leave_out: tuple[str, str] | None = None) -> np.ndarray:
        """The prior shift [G]; with ``leave_out`` = (target, cell type) of a training group, its cross-fitted one."""
        if leave_out is not None and leave_out in self.crossfit:
            return self.crossfit[leave_out]
        return np.asarray(self.model.predict_shift(target, cell_type), dtype=np.float64)

    def log(self) -> dict[str, Any]:
        """train_log.json's ``prior``: the chosen baseline (its blend shares, or one choice per kind) and every
        candidate's cross-fitted error and score."""
        def scores(sc: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
            return {c: {t: round(v, 5) for t, v in terms.items()} for c, terms in sc.items()}

        out = {"chosen": self.name, "display": self.display_name, "best_single": self.best_single,
               "criterion": self.criterion, "blend": dict(self.weights),
               "crossfit_mse": {k: round(v, 8) for k, v in self.errors.items()},
               "crossfit_score": scores(self.scores),
               "fold_unit": self.unit, "folds": self.folds, "groups": len(self.crossfit)}
        if self.kinds:
            out["by_kind"] = {kd: {"chosen": ch.name, "display": ch.display, "best_single": ch.best_single,
                                   "blend": dict(ch.weights), "groups": ch.groups,
                                   "crossfit_score": scores(ch.scores)} for kd, ch in self.kinds.items()}
        return out

    def state(self) -> dict[str, Any]:
        common = {"name": self.name, "errors": self.errors, "unit": self.unit, "folds": self.folds,
                  "criterion": self.criterion, "scores": self.scores}
        if self.kinds:
            return {**common, "kinds": {kd: {**_choice_state(ch.name, ch.weights, self.model.models[kd]),
                                             "scores": ch.scores, "groups": ch.groups, "best_single": ch.best_single}
                                        for kd, ch in self.kinds.items()}}
        return {**common, "best_single": self.best_single, **_choice_state(self.name, self.weights, self.model)}

    @classmethod
    def from_state(cls, s: dict[str, Any], lookup: Any, *, seed: int = 0) -> BaselinePrior:
        """Restore the fitted prior (the cross-fitted training shifts are not kept: prediction never uses them)."""
        kinds: dict[str, _Choice] = {}
        if s.get("kinds"):
            models = {}
            for kd, ks in s["kinds"].items():
                models[kd], weights = _choice_from_state(ks, lookup, seed)
                kinds[kd] = _Choice(str(ks["name"]), weights, dict(ks.get("scores") or {}), int(ks.get("groups", 0)),
                                    str(ks.get("best_single", "")))
            model: Any = _ByKind(models)
            weights = {}
        else:
            model, weights = _choice_from_state(s, lookup, seed)
        return cls(str(s["name"]), model, {}, dict(s["errors"]), str(s["unit"]), int(s["folds"]), lookup,
                   str(s.get("criterion", "mse")), dict(s.get("scores") or {}), weights, kinds,
                   str(s.get("best_single", "")))
