"""Scoring of the labels task (PerturbQA): per readout gene, how well the scores rank the test perturbations.

``auc_per_gene`` is PerturbQA's metric (``perturbqa/eval.py``, Wu et al. 2025): for each readout gene, the ROC AUC
over the test (perturbation, line) rows labelled for it, of the predicted score against the label; genes whose test
labels are all 0 or all 1 are skipped; the mean over genes. The direction task is the same over the DE pairs'
direction labels. AUPRC per gene (average precision) is reported beside it. A gene's base rate cannot help: a model
must rank *perturbations*.

Published rows (``resources/perturbqa_published.csv``, Wu et al. 2025 Table 1) are shown beside ours.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import report_page
from pertpipe.data.labels import MISSING

SECTION = "Perturbation labels (PerturbQA)"  # the report's title section

PUBLISHED = Path(__file__).resolve().parents[2] / "resources" / "perturbqa_published.csv"
COLUMNS = ["model", "auc_de", "auc_dir", "auprc_de", "n_genes_de", "n_genes_dir", "train_s"]


def per_gene(codes: np.ndarray, scores: np.ndarray, genes: list[str], fn: str) -> dict[str, float]:
    """``fn`` (``auc`` or ``auprc``) per gene over the rows labelled for it; genes with one class are left out."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    f = roc_auc_score if fn == "auc" else average_precision_score
    out = {}
    for j, g in enumerate(genes):
        m = codes[:, j] != MISSING
        y = codes[m, j]
        if y.size < 2 or y.min() == y.max():
            continue
        out[g] = float(f(y, scores[m, j]))
    return out


class LabelContext:
    """The truth codes and the predicted scores of the same rows and genes (the metric table's context)."""

    def __init__(self, truth_de: np.ndarray, truth_dir: np.ndarray, pred_de: np.ndarray, pred_dir: np.ndarray,
                 genes: list[str]) -> None:
        self.truth = {"de": truth_de, "dir": truth_dir}
        self.pred = {"de": pred_de, "dir": pred_dir}
        self.genes = genes

    def per_gene(self, kind: str, fn: str) -> dict[str, float]:
        return per_gene(self.truth[kind], self.pred[kind], self.genes, fn)


def align_predictions(truth: Any, pred: Any, *, path: str | os.PathLike = "predictions") -> tuple[np.ndarray, ...]:
    """The prediction's scores in the truth's row and gene order; a missing row or gene is an error naming it."""
    from pertpipe.errors import ContractError

    t_rows = truth.obs_names.astype(str)
    p_rows = pd.Index(pred.obs_names.astype(str))
    lost = t_rows[~t_rows.isin(p_rows)]
    if len(lost):
        raise ContractError(path, "obs_names", f"{len(lost)} test rows are not predicted, e.g. {list(lost[:3])}",
                            "predict with the pipeline's predict rule (every test (perturbation, line) row)")
    p_genes = pd.Index(pred.var_names.astype(str))
    t_genes = truth.var_names.astype(str)
    lost = t_genes[~t_genes.isin(p_genes)]
    if len(lost):
        raise ContractError(path, "var_names", f"{len(lost)} readout genes are not predicted, e.g. {list(lost[:3])}",
                            "predict every readout gene of the training labels")
    ri, gi = p_rows.get_indexer(t_rows), p_genes.get_indexer(t_genes)
    de = np.asarray(pred.X, dtype=np.float64)[np.ix_(ri, gi)]
    dr = np.asarray(pred.layers["dir"], dtype=np.float64)[np.ix_(ri, gi)]
    if not (np.isfinite(de).all() and np.isfinite(dr).all()):
        raise ContractError(path, "X / layers['dir']", "non-finite scores", "predict finite scores")
    return de, dr


def score_labels(truth: Any, pred: Any, *, path: str | os.PathLike = "predictions") -> tuple[pd.DataFrame, dict]:
    """Every registered labels metric: a per-gene table and the means (and how many genes each averages)."""
    from pertpipe.evaluation.metric_registry import metrics, score_context

    de, dr = align_predictions(truth, pred, path=path)
    genes = [str(g) for g in truth.var_names]
    ctx = LabelContext(np.asarray(truth.X, dtype=np.int8), np.asarray(truth.layers["dir"], dtype=np.int8), de, dr,
                       genes)
    table, agg = score_context(ctx, genes, task="labels", key_column="gene")
    for m in metrics(task="labels"):
        agg[f"n_genes_{m.column}"] = int(table[m.column].notna().sum())
    agg["n_genes_de"], agg["n_genes_dir"] = agg.pop("n_genes_auc_de"), agg.pop("n_genes_auc_dir")
    agg["test_rows"] = int(truth.n_obs)
    return table, agg


def published_rows(path: str | os.PathLike = PUBLISHED) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def label_leaderboard(metrics: dict[str, dict[str, Any]], *, lines: list[str],
                      published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our rows (one per model, best auc_de first) and, for a one-line dataset the paper has, its rows (source
    'published')."""
    rows = [{"model": m, **{c: v.get(c) for c in COLUMNS[1:]}, "source": "pertpipe"} for m, v in metrics.items()]
    df = pd.DataFrame(rows, columns=COLUMNS + ["source"]).sort_values("auc_de", ascending=False, na_position="last")
    if published is not None and len(lines) == 1:
        pub = published[published["line"] == lines[0]]
        if len(pub):
            df = pd.concat([df, pd.DataFrame({"model": pub["model"], "auc_de": pub["auc_de"],
                                              "auc_dir": pub["auc_dir"], "source": "published (Wu et al. 2025)"})],
                           ignore_index=True)
    return df.reset_index(drop=True)


#: label_leaderboard.md's columns: the verdict first (every column stays in the csv)
MD_COLUMNS = ["model", "standing", "Δ auc_de vs strongest baseline [95 % CI]", "auc_de", "auc_dir", "auprc_de",
              "n_genes_de", "train_s", "source"]


def leaderboard_markdown(df: pd.DataFrame, *, dataset: str, licence: str) -> str:
    from pertpipe.evaluation.report import delta_text

    rows = [{**r, "model": f"{r['model']} (baseline)" if r.get("baseline") is True else r["model"],
             "standing": r.get("standing") if isinstance(r.get("standing"), str) else "",
             MD_COLUMNS[2]: delta_text(r)} for r in df.to_dict("records")]
    rows = [[r.get(c) for c in MD_COLUMNS] for r in rows]
    lines = [f"# Label leaderboard: {dataset}", "",
             "auc_de / auc_dir: PerturbQA's auc_per_gene (per readout gene, ROC AUC over the test perturbations; "
             "genes with one class skipped; mean over genes). auprc_de: average precision per gene. Published rows: "
             "Wu et al. 2025 (ICLR), Table 1, the same given split. standing: better / worse than the strongest "
             "baseline (the baseline row with the highest auc_de), or tie where the bootstrap 95 % interval of Δ "
             "auc_de, paired per readout gene, covers 0.", "",
             f"Data licence: {licence}.", "",
             report_page.markdown_table(pd.DataFrame(rows, columns=MD_COLUMNS), lambda v, c: report_page.cell_text(
                 v, c, 1 if c == "train_s" else 4))]
    return "\n".join(lines) + "\n"


def plot_leaderboard(df: pd.DataFrame, dest: str | os.PathLike, *, title: str) -> None:
    """Bars of auc_de and auc_dir per row (ours, then the published), the 0.5 line of chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pertpipe.io import atomic_path

    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(df) + 2), 3.6))
    x = np.arange(len(df))
    for off, col, colour in ((-0.2, "auc_de", "#3b6ea5"), (0.2, "auc_dir", "#d08c2f")):
        vals = pd.to_numeric(df[col], errors="coerce").to_numpy()
        ax.bar(x + off, np.nan_to_num(vals, nan=0.0), width=0.4, color=colour, label=col)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    labels = [f"{m}{' *' if str(s).startswith('published') else ''}" for m, s in zip(df["model"], df["source"])]
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0.4, 0.8)
    ax.set_ylabel("AUC per gene (mean)")
    ax.set_title(title + "  (* published, Wu et al. 2025)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


SETTING_KEYS = ("k", "alpha", "best_epoch", "refit", "priors", "fusion", "loss")


def _settings(log: dict[str, Any]) -> str:
    """What a model's fit chose (k, α, epoch...) and the validation AUC it chose it on, as one line."""
    parts = [f"{k}={log[k]}" for k in SETTING_KEYS if log.get(k) not in (None, [], {})]
    val = log.get("validation_auc_de")
    if isinstance(val, dict) and val:
        parts.append("validation auc_de: " + ", ".join(f"{k}: {v:.3f}" for k, v in val.items()))
    return "; ".join(parts)


def _plot_curves(train_logs: dict[str, dict[str, Any]]) -> str:
    """Loss and validation AUC per epoch of the models that record a curve (DyGenePT's label head)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    curves = {m: tl["curve"] for m, tl in train_logs.items() if isinstance(tl.get("curve"), dict)
              and tl["curve"].get("epoch")}
    if not curves:
        return "<p>No model in this run records a training curve (the baselines are fitted in closed form).</p>"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.5, 3))
    for m, c in curves.items():
        a1.plot(c["epoch"], c["loss"], label=m)
        if c.get("val_auc_de"):
            a2.plot(c["epoch"][:len(c["val_auc_de"])], c["val_auc_de"], label=f"{m} DE")
        if c.get("val_auc_dir"):
            a2.plot(c["epoch"][:len(c["val_auc_dir"])], c["val_auc_dir"], ls="--", label=f"{m} direction")
    a1.set(xlabel="epoch", ylabel="training loss (masked BCE)")
    a2.set(xlabel="epoch", ylabel="validation AUC per gene")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    return report_page.figure(fig, alt="training curves")


def html_report(*, dataset: str, board: pd.DataFrame, figure_png: str | os.PathLike, stage1: dict[str, Any],
                train_logs: dict[str, dict[str, Any]], versions: dict[str, str], links: str = "") -> str:
    """The labels task's ``report.html``: the leaderboard beside the published rows and its figure, what each
    model chose on validation, knowledge coverage, the stage-1 summary and the data licence."""
    from pertpipe.data.labels import labels_report_text

    std = stage1["standardize"]
    fits = pd.DataFrame([{
        "model": m, "learner": tl.get("learner"), "train_s": tl.get("wall_s"),
        "perturbations with text": (tl.get("knowledge_coverage") or {}).get("perturbations", {}).get("fraction"),
        "readout genes with text": (tl.get("knowledge_coverage") or {}).get("readout_genes", {}).get("fraction"),
        "chosen on validation": _settings(tl)} for m, tl in train_logs.items()])
    esc = report_page.escape
    parts = [
        f"<p>Data licence: <strong>{esc(std.get('licence'))}</strong></p>",
        "<h2>Leaderboard</h2>", report_page.table(board),
        "<p><code>auc_de</code> / <code>auc_dir</code>: PerturbQA's <code>auc_per_gene</code> (per readout gene, ROC "
        "AUC over the test perturbations; genes with one class skipped; mean over genes); <code>auprc_de</code>: "
        "average precision per gene. Rows with source <em>published</em> are Wu et al. 2025 (ICLR), Table 1, on the "
        "same given split; 0.5 is chance.</p>",
        report_page.png_file(figure_png, alt="AUC per model beside the published rows"),
        "<h2>Models</h2>", report_page.table(fits) if len(fits) else "<p>-</p>",
        "<p>Every setting a model chooses (k, α, the number of epochs) is chosen on a validation share of the "
        "training perturbations, never on the test split.</p>",
        _plot_curves(train_logs),
        "<h2>Stage 1</h2>", f"<pre>{esc(labels_report_text(stage1))}</pre>",
        "<h2>Versions</h2>",
        report_page.table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"])), links,
    ]
    return report_page.page(report_page.task_title(SECTION, dataset), parts)
