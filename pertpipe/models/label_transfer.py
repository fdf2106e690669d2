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

from pertpipe.data.labels import MISSING

ALPHAS = (10.0, 100.0, 1000.0, 10000.0)
FILL = {"de": 0.0, "dir": 0.5}  # an unlabelled entry: not DE; direction undecided


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
    """Per line and kind, the dual-form ridge from other-line labels to the line's labels (module docstring)."""

    def __init__(self, seed: int = 0, val_fraction: float = 0.15, alphas: tuple[float, ...] = ALPHAS) -> None:
        self.seed, self.val_fraction, self.alphas = seed, val_fraction, alphas
        self.fits: dict[tuple[str, str], dict[str, Any]] = {}
        self._A: dict[tuple[str, str], np.ndarray] = {}  # centred training features (rebuilt, not stored)

    def _features(self, store: Any, line: str, kind: str) -> np.ndarray:
        if (line, kind) not in self._A:
            f = self.fits[(line, kind)]
            X, _ = other_line_means(store, kind, store.perts[f["rows"]], store.lines[f["rows"]])
            self._A[(line, kind)] = X - f["fm"]
        return self._A[(line, kind)]

    @staticmethod
    def _solve(A: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
        K = A @ A.T
        return np.linalg.solve(K + alpha * np.eye(len(K)), Y)

    def fit(self, store: Any, rows: np.ndarray | None = None) -> dict[str, Any]:
        """Fit on ``store``'s rows (``rows``: a boolean mask of those the ridges may train on; features always come
        from the whole store). Returns {line: {kind: chosen α}}."""
        from pertpipe.models.labels import mean_auc

        rows = np.ones(len(store.perts), bool) if rows is None else rows
        rng = np.random.default_rng(self.seed + 53)
        log: dict[str, Any] = {}
        for line in sorted(set(map(str, store.lines))):
            idx = np.flatnonzero(rows & (store.lines == line))
            for kind in ("de", "dir"):
                X, has = other_line_means(store, kind, store.perts[idx], store.lines[idx])
                idx_k, X = idx[has], X[has]
                if len(idx_k) < 10:
                    continue
                Y = _codes(store, kind)[idx_k]
                Yf = np.where(Y == MISSING, FILL[kind], Y).astype(np.float32)
                perts = np.unique(store.perts[idx_k])
                val_p = set(rng.choice(perts, size=max(1, int(round(self.val_fraction * len(perts)))), replace=False))
                va = np.array([p in val_p for p in store.perts[idx_k]])
                aucs = {}
                if va.any() and (~va).any():
                    fm, ym = X[~va].mean(0), Yf[~va].mean(0)
                    A = X[~va] - fm
                    for a in self.alphas:
                        coef = self._solve(A, Yf[~va] - ym, a)
                        aucs[a] = mean_auc(Y[va], (X[va] - fm) @ A.T @ coef + ym)
                alpha = max(aucs, key=lambda a: (aucs[a], a)) if aucs else self.alphas[len(self.alphas) // 2]
                fm, ym = X.mean(0), Yf.mean(0)
                A = X - fm
                # the training features are rebuilt from the store when predicting (model.pt keeps the row numbers)
                self.fits[(line, kind)] = {"rows": idx_k.astype(np.int64), "coef": self._solve(A, Yf - ym, alpha)
                                           .astype(np.float32), "fm": fm.astype(np.float32),
                                           "ym": ym.astype(np.float32), "alpha": alpha}
                self._A[(line, kind)] = A.astype(np.float32)
                log.setdefault(line, {})[kind] = {"alpha": alpha, "rows": int(len(idx_k)),
                                                  "val_auc_by_alpha": {f"{a:g}": round(float(v), 4)
                                                                       for a, v in aucs.items()}}
        return log

    def predict(self, store: Any, kind: str, perts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, G] transfer scores of the queries and [n] whether the perturbation is measured in another line (rows
        without get the line's mean label, or :data:`FILL` for a line the ridges never saw)."""
        X, has = other_line_means(store, kind, perts, lines)
        out = np.full(X.shape, FILL[kind], dtype=np.float32)
        for line in set(map(str, lines)):
            f = self.fits.get((line, kind))
            sel = np.asarray(lines) == line
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
    def from_state(cls, state: dict[str, Any], seed: int = 0) -> LineTransfer:
        t = cls(seed)
        t.fits = {tuple(k.split("|", 1)): {n: (np.asarray(a) if n != "alpha" else float(a)) for n, a in v.items()}
                  for k, v in state.items()}
        for f in t.fits.values():
            f["rows"] = f["rows"].astype(np.int64)
        return t
