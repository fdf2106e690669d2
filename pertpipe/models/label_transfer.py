"""Cross-line transfer of labels: a perturbation's labels in one line predicted from its labels in the other lines.

For each line c and each kind (DE, direction), a ridge maps a perturbation's mean label in the *other* lines, over
every readout gene measured there, to its labels in c (all of c's readout genes at once), so gene j's score in c
can draw on genes co-regulated with j elsewhere, not only on j's own label there (what ``xctx_rate`` reads). It is
fitted in the dual form, W = Aᵀ(AAᵀ + αI)⁻¹(Y - ȳ) with A the centred features of the training rows of c that are
measured in another line, so its cost grows with rows², not with genes². α is chosen per line and kind on a
validation share of those perturbations (mean AUC over genes), then refitted on all of them.

A row's features always come from the stored rows of the same perturbation in other lines (the labels a user
has); only the ridge's own training rows are restricted, so a cross-fitted score (``rows``) never saw the row's
label in its own line. A perturbation measured in no other line gets the line's mean label (``has`` is False).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pertpipe.core.ridge import ridge_solve
from pertpipe.data.labels import MISSING
from pertpipe.models.label_learner import FILLS

ALPHAS = (10.0, 100.0, 1000.0, 10000.0)
FILL = FILLS  # an unlabelled entry: not DE; direction undecided


def _codes(data: Any, kind: str) -> np.ndarray:
    return data.de if kind == "de" else data.dir


def other_line_means(store: Any, kind: str, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, G] mean label of each query (perturbation, line) over the stored rows of that perturbation in other lines
    (unlabelled -> :data:`FILL`), and [n] whether any such row exists."""
    codes = _codes(store, kind)
    by_pert: dict[str, list[int]] = {}
    for i, p in enumerate(store.perts):
        by_pert.setdefault(str(p), []).append(i)
    out = np.full((len(perts), codes.shape[1]), FILL[kind], dtype=np.float32)
    has = np.zeros(len(perts), bool)
    for r, (p, c) in enumerate(zip(perts, lines)):
        rows = [i for i in by_pert.get(str(p), []) if store.lines[i] != c]
        if not rows:
            continue
        x = codes[rows].astype(np.float32)
        lab = (x != MISSING).sum(0)
        pos = np.where(x == MISSING, 0, x).sum(0)
        out[r] = np.where(lab > 0, pos / np.maximum(lab, 1), FILL[kind])
        has[r] = True
    return out, has


class LineTransfer:
    """Per line and kind, the dual-form ridge from other-line labels to the line's labels (module docstring).

    One object fitted several times on the same store (the cross-fitting folds) computes each line's features and
    their Gram matrix once: every fold's centred kernel and validation products are read from it."""

    def __init__(self, score: Any, seed: int = 0, val_fraction: float = 0.15,
                 alphas: tuple[float, ...] = ALPHAS) -> None:
        """``score(codes, scores)``: the validation score α is chosen by (the labels models' mean AUC over genes)."""
        self.score, self.seed, self.val_fraction, self.alphas = score, seed, val_fraction, alphas
        self.fits: dict[tuple[str, str], dict[str, Any]] = {}
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # rows, X, Gram
        self._store_id: int | None = None

    def _line(self, store: Any, line: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(store rows of ``line`` measured in another line, their features X, X Xᵀ), cached per store."""
        if self._store_id != id(store):
            self._cache, self._store_id = {}, id(store)
        if (line, kind) not in self._cache:
            idx = np.flatnonzero(store.lines == line)
            X, has = other_line_means(store, kind, store.perts[idx], store.lines[idx])
            X = X[has]
            self._cache[(line, kind)] = (idx[has], X, (X @ X.T).astype(np.float64))
        return self._cache[(line, kind)]

    @staticmethod
    def _centred(Gm: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(x_i - m)·(x_j - m) for i in ``rows``, j in ``cols``, m the mean of the ``cols`` features."""
        r_rows = Gm[np.ix_(rows, cols)].mean(1)
        r_cols = Gm[np.ix_(cols, cols)].mean(1)
        return Gm[np.ix_(rows, cols)] - r_rows[:, None] - r_cols[None, :] + r_cols.mean()

    def fit(self, store: Any, rows: np.ndarray | None = None) -> dict[str, Any]:
        """Fit on ``store``'s rows (``rows``: a boolean mask of those the ridges may train on; features always come
        from the whole store). Returns {line: {kind: the chosen α, rows, validation AUC per α}}."""
        rows = np.ones(len(store.perts), bool) if rows is None else rows
        rng = np.random.default_rng(self.seed + 53)
        log: dict[str, Any] = {}
        self.fits, self._A_key = {}, None  # a new fit: the rebuilt training features are stale
        for line in sorted(set(map(str, store.lines))):
            for kind in ("de", "dir"):
                idx, X, Gm = self._line(store, line, kind)
                keep = np.flatnonzero(rows[idx])
                if len(keep) < 10:
                    continue
                Y = _codes(store, kind)[idx[keep]]
                Yf = np.where(Y == MISSING, FILL[kind], Y).astype(np.float64)
                perts = np.unique(store.perts[idx[keep]])
                val_p = set(rng.choice(perts, size=max(1, int(round(self.val_fraction * len(perts)))), replace=False))
                va = np.array([p in val_p for p in store.perts[idx[keep]]])
                aucs = {}
                if va.any() and (~va).any():
                    t, v = keep[~va], keep[va]
                    w, U = np.linalg.eigh(self._centred(Gm, t, t))
                    Kv = self._centred(Gm, v, t)
                    ym = Yf[~va].mean(0)
                    UtY = U.T @ (Yf[~va] - ym)
                    for a in self.alphas:
                        coef = U @ (UtY / (np.maximum(w, 0) + a)[:, None])
                        aucs[a] = self.score(Y[va], Kv @ coef + ym)
                alpha = max(aucs, key=lambda a: (aucs[a], a)) if aucs else self.alphas[len(self.alphas) // 2]
                K = self._centred(Gm, keep, keep)
                ym = Yf.mean(0)
                coef = ridge_solve(K, Yf - ym, alpha)
                # the training features are rebuilt from the store when predicting (model.pt keeps the row numbers)
                self.fits[(line, kind)] = {"rows": idx[keep].astype(np.int64), "coef": coef.astype(np.float32),
                                           "fm": X[keep].mean(0).astype(np.float32), "ym": ym.astype(np.float32),
                                           "alpha": alpha}
                log.setdefault(line, {})[kind] = {"alpha": alpha, "rows": int(len(keep)),
                                                  "val_auc_by_alpha": {f"{a:g}": round(float(v), 4)
                                                                       for a, v in aucs.items()}}
        return log

    def release(self) -> None:
        """Drop the cached features and Gram matrices (what fitting needed; prediction rebuilds what it needs)."""
        self._cache, self._store_id, self._A_key = {}, None, None

    def _features(self, store: Any, line: str, kind: str) -> np.ndarray:
        """The centred training features of a fitted (line, kind), rebuilt from the store."""
        f = self.fits[(line, kind)]
        key = ("A", line, kind, id(store))
        if getattr(self, "_A_key", None) != key:
            X, _ = other_line_means(store, kind, store.perts[f["rows"]], store.lines[f["rows"]])
            self._A, self._A_key = X - f["fm"], key
        return self._A

    def predict(self, store: Any, kind: str, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, G] transfer scores of the queries and [n] whether the perturbation is measured in another line (rows
        without get the line's mean label, or :data:`FILL` for a line the ridges never saw)."""
        X, has = other_line_means(store, kind, perts, lines)
        out = np.full(X.shape, FILL[kind], dtype=np.float32)
        lines = np.asarray(lines)
        for line in set(map(str, lines)):
            f = self.fits.get((line, kind))
            sel = lines == line
            if f is None:
                continue
            out[sel] = f["ym"]
            s = sel & has
            if s.any():
                out[s] = (X[s] - f["fm"]) @ self._features(store, line, kind).T @ f["coef"] + f["ym"]
        return out, has & np.array([(str(c), kind) in self.fits for c in lines], dtype=bool)

    def state(self) -> dict[str, Any]:
        return {f"{line}|{kind}": v for (line, kind), v in self.fits.items()}

    @classmethod
    def from_state(cls, state: dict[str, Any], score: Any, seed: int = 0) -> LineTransfer:
        t = cls(score, seed)
        t.fits = {tuple(k.split("|", 1)): {n: (np.asarray(a) if n != "alpha" else float(a)) for n, a in v.items()}
                  for k, v in state.items()}
        for f in t.fits.values():
            f["rows"] = f["rows"].astype(np.int64)
        return t
