"""Signature metrics (DeepCE's, the L1000 field's standard) and the scoring of signature datasets.

Per predicted vs true signature (a z-score vector over the landmark genes, or a single-cell perturbation's
pseudobulk change): Pearson and Spearman correlation, RMSE, and precision@k of the top up- and down-regulated
genes (|top-k of the prediction ∩ top-k of the truth| / k, for the k largest and the k smallest values; the
reported ``precision@k`` is the mean of the two), k = 10, 20, 50, 100.

Signature datasets (L1000) are scored here instead of by cell-eval (which tests cells for differential
expression; a signature is already a differential profile): every true signature against the model's prediction
for its (perturbation, context), averaged over signatures and reported per held-out context.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pertpipe import report_page
from pertpipe.core.h5io import H5adReader

SECTION = "Signatures (L1000)"  # the report's title section

KS = (10, 20, 50, 100)


def signature_metric_names() -> list[str]:
    """The signatures task's metrics, from the metric table (task ``signatures``)."""
    from pertpipe.evaluation.metric_registry import metrics

    return [m.column for m in metrics(task="signatures")]


@dataclass
class SignatureContext:
    """What a signatures metric reads: each scored signature's true and predicted vector (rows of ``truth`` and
    ``pred``) under its key; the scores of :func:`signature_scores` are computed once per signature."""

    keys: list[str]
    truth: np.ndarray
    pred: np.ndarray

    @cached_property
    def scores(self) -> list[dict[str, float]]:
        return [signature_scores(y, yh) for y, yh in zip(self.truth, self.pred)]

    def per_signature(self, name: str) -> dict[str, float]:
        return {k: s[name] for k, s in zip(self.keys, self.scores)}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def precision_at_k(y: np.ndarray, yh: np.ndarray, k: int) -> tuple[float, float]:
    """(up, down): shares of the true top-k / bottom-k genes among the predicted top-k / bottom-k."""
    k = min(k, len(y))
    up = len(set(np.argsort(-y, kind="stable")[:k]) & set(np.argsort(-yh, kind="stable")[:k])) / k
    down = len(set(np.argsort(y, kind="stable")[:k]) & set(np.argsort(yh, kind="stable")[:k])) / k
    return up, down


def signature_scores(y: np.ndarray, yh: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    y, yh = np.asarray(y, dtype=np.float64), np.asarray(yh, dtype=np.float64)
    out = {"pearson": _corr(y, yh), "spearman": _corr(rankdata(y), rankdata(yh)),
           "rmse": float(np.sqrt(np.mean((y - yh) ** 2)))}
    for k in ks:
        up, down = precision_at_k(y, yh, k)
        out[f"precision@{k}"] = (up + down) / 2
        out[f"precision@{k}_up"], out[f"precision@{k}_down"] = up, down
    return out


def score_signature_files(truth: str | os.PathLike, predictions: str | os.PathLike
                          ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every truth row against the mean prediction of its (target_gene, cell_type); a per-signature table and
    the summary (mean over signatures, and the mean per context)."""
    from pertpipe import CONTROL_LABEL
    from pertpipe.errors import ContractError

    with H5adReader(truth) as r:
        t_obs = r.obs[["target_gene", "cell_type"]].astype(str).reset_index(drop=True)
        Y = r.read_masked().toarray()
        genes = [str(g) for g in r.var_names]
    with H5adReader(predictions) as r:
        p_obs = r.obs[["target_gene", "cell_type"]].astype(str).reset_index(drop=True)
        P = r.read_masked().toarray()
        if [str(g) for g in r.var_names] != genes:
            raise ContractError(predictions, "var_names", "gene order differs from the truth", "re-run predict")
    pred_mean = {k: P[v].mean(0) for k, v in p_obs.groupby(["target_gene", "cell_type"]).indices.items()}
    rows, keys, truth_rows, pred_rows = [], [], [], []
    for j, (t, c) in enumerate(zip(t_obs.target_gene, t_obs.cell_type)):
        if t == CONTROL_LABEL:
            continue
        if (t, c) not in pred_mean:
            raise ContractError(predictions, "obs", f"no prediction for ({t}, {c})", "re-run predict on the template")
        rows.append({"target_gene": t, "cell_type": c})
        keys.append(str(j))
        truth_rows.append(Y[j])
        pred_rows.append(pred_mean[(t, c)])
    if not rows:
        raise ContractError(truth, "obs['target_gene']", "no perturbed signature to score", "check the split")
    from pertpipe.evaluation.metric_registry import score_context

    ctx = SignatureContext(keys, np.vstack(truth_rows), np.vstack(pred_rows))
    scored, _agg = score_context(ctx, keys, task="signatures", key_column="signature")
    extra = pd.DataFrame([{k: v for k, v in s.items() if k.endswith(("_up", "_down"))} for s in ctx.scores])
    table = pd.concat([pd.DataFrame(rows), scored.drop(columns="signature"), extra], axis=1)
    main = signature_metric_names()
    summary = {"n_signatures": int(len(table)), "n_contexts": int(table.cell_type.nunique()),
               **{m: float(table[m].mean()) for m in main},
               "per_context": {c: {m: float(g[m].mean()) for m in main} | {"n": int(len(g))}
                               for c, g in table.groupby("cell_type")}}
    return table, summary


def signature_leaderboard(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model, best Pearson first."""
    rows = [{"model": m, **{k: s[k] for k in signature_metric_names()}, "n_signatures": s["n_signatures"], "n_contexts": s["n_contexts"]}
            for m, s in summaries.items()]
    return pd.DataFrame(rows).sort_values("pearson", ascending=False).reset_index(drop=True)


def write_signature_leaderboard(board: pd.DataFrame, summaries: dict[str, dict[str, Any]], csv: str | os.PathLike,
                                md: str | os.PathLike, *, title: str) -> None:
    """The leaderboard as csv, and as markdown with the per-context Pearson and precision@50 of each model."""
    from pertpipe.io import atomic_path, write_text

    with atomic_path(csv) as tmp:
        board.to_csv(tmp, index=False)
    from pertpipe.evaluation.report import delta_text

    fmt = board.copy()
    for c in signature_metric_names():
        fmt[c] = fmt[c].map(lambda v: f"{v:.4f}")
    if "standing" in fmt:  # the verdict first: standing and Δ pearson vs the strongest baseline
        fmt.insert(1, "standing", fmt.pop("standing").fillna(""))
        fmt.insert(2, "Δ pearson vs strongest baseline [95 % CI]", [delta_text(r) for _, r in board.iterrows()])
        fmt["model"] = [f"{m} (baseline)" if b else m for m, b in zip(board["model"], board["baseline"])]
        fmt = fmt.drop(columns=[c for c in ("baseline", "vs_baseline", "delta", "ci_low", "ci_high") if c in fmt])
    lines = [f"# {title}", "", "Mean over held-out signatures (DeepCE's metrics; precision@k = mean of the top-k "
             "up- and down-regulated genes' precision). standing: better / worse than the strongest baseline (the "
             "baseline row with the highest pearson), or tie where the bootstrap 95 % interval of Δ pearson, paired "
             "per held-out signature, covers 0.", "", report_page.markdown_table(fmt, lambda v, c: str(v)), "", "## Per held-out context",
             "", "| model | context | n | pearson | precision@50 |", "|---|---|---|---|---|"]
    for m in board["model"]:
        for ctx, s in summaries[m]["per_context"].items():
            lines.append(f"| {m} | {ctx} | {s['n']} | {s['pearson']:.4f} | {s['precision@50']:.4f} |")
    write_text("\n".join(lines) + "\n", md)


def _plot_board(board: pd.DataFrame) -> str:
    """Bars of Pearson and precision@50 per model (mean over held-out signatures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(board) + 2), 3.2))
    x = np.arange(len(board))
    ax.bar(x - 0.2, board["pearson"], width=0.4, label="pearson", color="#3b6ea5")
    ax.bar(x + 0.2, board["precision@50"], width=0.4, label="precision@50", color="#d08c2f")
    ax.set_xticks(x, [str(m) for m in board["model"]], rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("mean over held-out signatures")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return report_page.figure(fig, alt="signature metrics per model")


def _plot_per_signature(tables: dict[str, pd.DataFrame]) -> str:
    """Pearson of every held-out signature, per model (the spread behind the means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    models = [m for m, t in tables.items() if len(t)]
    if not models:
        return ""
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(models) + 2), 3.2))
    ax.boxplot([tables[m]["pearson"].to_numpy() for m in models], showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("Pearson per held-out signature")
    fig.tight_layout()
    return report_page.figure(fig, alt="Pearson per held-out signature")


def html_report(*, dataset: str, board: pd.DataFrame, summaries: dict[str, dict[str, Any]],
                tables: dict[str, pd.DataFrame], stage1: dict[str, Any], train_logs: dict[str, dict[str, Any]],
                versions: dict[str, str], links: str = "") -> str:
    """The signatures task's ``report.html``: the leaderboard and its figure, Pearson per held-out signature, the
    per-context table, training (the gate of ctxfusion, loss curves), stage 1, versions and the run's files."""
    from pertpipe.evaluation.report import plot_losses

    per_ctx = pd.DataFrame([{"model": m, "context": c, "n": v["n"], "pearson": v["pearson"],
                             "precision@50": v["precision@50"]}
                            for m, s in summaries.items() for c, v in s["per_context"].items()])
    fits = pd.DataFrame([{"model": m, "train_s": tl.get("wall_s"), "device": tl.get("device", "cpu"),
                          "gate mean": (tl.get("gate") or {}).get("mean") if isinstance(tl.get("gate"), dict)
                          else None} for m, tl in train_logs.items()])
    split, z = stage1.get("split", {}), stage1.get("zscores", {})
    s1 = pd.DataFrame([("signatures (train / held out)", f"{split.get('n_cells', {}).get('train')} / "
                        f"{split.get('n_cells', {}).get('val')}"),
                       ("split", f"{split.get('strategy')} (seed {split.get('seed')})"),
                       ("contexts / perturbations (training z-scores)", f"{z.get('contexts')} / {z.get('perturbations')}"),
                       ("genes", str(stage1.get("alignment", {}).get("universe_size")))], columns=["stage 1", "value"])
    parts = [
        "<h2>Leaderboard</h2>", report_page.table(board), _plot_board(board),
        "<p>DeepCE's signature metrics: per held-out signature, the true z-scores against the model's prediction for "
        "its (perturbation, context); precision@k is the mean of the top-k up- and down-regulated genes' "
        "precision.</p>",
        "<h2>Per held-out signature</h2>", _plot_per_signature(tables),
        "<h2>Per held-out context</h2>", report_page.table(per_ctx) if len(per_ctx) else "<p>-</p>",
        "<h2>Training</h2>", report_page.table(fits) if len(fits) else "<p>-</p>", plot_losses(train_logs),
        "<h2>Stage 1</h2>", report_page.table(s1),
        "<h2>Versions</h2>",
        report_page.table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"])), links,
    ]
    return report_page.page(report_page.task_title(SECTION, dataset), parts)
