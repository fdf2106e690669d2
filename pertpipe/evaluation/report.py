"""Leaderboard (csv + markdown) and the self-contained HTML report with plots."""

from __future__ import annotations

import html
import os
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL, report_page
from pertpipe.io import atomic_path, read_json, write_text

SHRINK_COLUMNS = ["lambda", "anchor", "equals", "shrinkage"]


def leaderboard_columns() -> list[str]:
    """model, the avg_score metrics raw and scaled, avg_score, the other metrics (local scorer), the shrinkage
    columns (λ, anchor, the baseline a λ = 0 row equals, how λ was set), train time, device."""
    from pertpipe.evaluation.metric_registry import metrics

    scored = [m.name for m in metrics(in_avg_score=True)]
    extra = [m.name for m in metrics(in_avg_score=False)]
    return ["model", *scored, *(f"{k}_scaled" for k in scored), "avg_score", *extra, *SHRINK_COLUMNS, "train_s",
            "device"]  # + pertpipe.evaluation.standing.STANDING_COLUMNS once add_standing has run


def shrinkage_columns(model: str, shrink: dict[str, Any] | None, equals: str | None = None) -> dict[str, Any]:
    """A row's λ, anchor, ``equals`` and how λ was set, from its predict.json ``shrinkage`` (None: not a shrunk
    model) and ``equals`` (the baseline a model says its predictions are, e.g. DyGenePT with its residual validated
    to γ = 0). A λ = 0 row must name the baseline it equals: the leaderboard refuses to print one that does not."""
    if not shrink:
        return {"lambda": None, "anchor": None, "equals": equals, "shrinkage": None}
    lam = float(shrink["lambda"])
    if lam == 0 and not shrink.get("equals"):
        raise ValueError(f"leaderboard row {model} has λ = 0 but does not say which baseline it equals "
                         "(predict.json shrinkage.equals)")
    return {"lambda": lam, "anchor": shrink.get("anchor"), "equals": shrink.get("equals") if lam == 0 else equals,
            "shrinkage": shrink.get("how")}


def leaderboard(scores: dict[str, str | os.PathLike], train_logs: dict[str, str | os.PathLike],
                local_metrics: dict[str, str | os.PathLike] | None = None,
                predict_logs: dict[str, str | os.PathLike] | None = None) -> pd.DataFrame:
    """One row per scored model (``<model>_raw`` rows included): the cell-eval-scored metrics raw and scaled against
    the cell-mean baseline, avg_score, the other registered metrics from the local scorer (``local_metrics.json``),
    the shrinkage columns (from ``predict.json``), training time; best first."""
    from pertpipe.evaluation.metric_registry import metrics

    rows = []
    for model, path in scores.items():
        s = read_json(path)
        tl = read_json(train_logs[model]) if model in train_logs else {}
        local = read_json(local_metrics[model])["mean"] if local_metrics and model in local_metrics else {}
        pl = read_json(predict_logs[model]) if predict_logs and model in predict_logs else {}
        rows.append({"model": model, **{k: s["raw"][k] for k in s["raw"]},
                     **{f"{k}_scaled": s["scaled"][k] for k in s["scaled"]},
                     **{m.name: local.get(m.column) for m in metrics(in_avg_score=False)},
                     "avg_score": s["avg_score"], **shrinkage_columns(model, pl.get("shrinkage"), pl.get("equals")),
                     "train_s": tl.get("wall_s"), "device": tl.get("device", "cpu")})
    return (pd.DataFrame(rows, columns=leaderboard_columns()).sort_values("avg_score", ascending=False)
            .reset_index(drop=True))


def add_vcc2026(board: pd.DataFrame, results: dict[str, str | os.PathLike]) -> tuple[pd.DataFrame, str | None]:
    """The board with cell-eval2's vcc2026 columns per row (``vcc2026_<metric>`` raw, ``..._scaled`` = from_replicate,
    ``vcc2026_avg_score``), and the skip note when the dataset could not be scored that way."""
    from pertpipe.evaluation.vcc2026 import columns

    rows = {m: read_json(p) for m, p in results.items()}
    note = next((r["skipped"] for r in rows.values() if "skipped" in r), None)
    extra = pd.DataFrame([{"model": m, **columns(r)} for m, r in rows.items()])
    if note or extra.empty:
        return board, note
    return board.merge(extra, on="model", how="left"), None


def row_label(row: Any) -> str:
    """The model name as printed: a λ = 0 row says which baseline it is (``cfmvc = celltype_mean (λ 0)``)."""
    name = str(row["model"])
    lam = row.get("lambda")
    if lam is not None and not pd.isna(lam) and float(lam) == 0:
        return f"{name} = {row['equals']} (λ 0)"
    if isinstance(row.get("equals"), str) and row.get("equals"):
        return f"{name} = {row['equals']}"
    return name


def labelled(board: pd.DataFrame) -> pd.DataFrame:
    """The board with :func:`row_label` names (a λ = 0 row says which baseline it is)."""
    out = board.copy()
    if len(out):
        out["model"] = [row_label(r) for _, r in board.iterrows()]
    return out


#: the verdict columns a person reads first (leaderboard.md and the report's first table); every other metric stays in
#: leaderboard.csv and the collapsible "All metrics" table
SUMMARY_COLUMNS = ["model", "standing", "Δ vs strongest baseline [95 % CI]", "avg_score", "vcc2026_avg_score", "DES",
                   "PDS", "MAE", "equals"]


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v) else float(v)


def delta_text(row: Any) -> str:
    """``+0.123 [+0.045, +0.201]``: a row's Δ avg_score vs the strongest baseline with its interval ('' for the
    strongest baseline itself)."""
    d, lo, hi = (_num(row.get(c)) for c in ("delta", "ci_low", "ci_high"))
    return "" if d is None else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def summary_table(board: pd.DataFrame) -> pd.DataFrame:
    """The verdict view of a board (:data:`SUMMARY_COLUMNS`, at most 10): the model as printed (a λ = 0 row says
    which baseline it is; a baseline row says it is one), its standing against the strongest baseline, Δ [95 % CI],
    the VCC scores and DES / PDS / MAE."""
    rows = []
    for _, r in board.iterrows():
        name = row_label(r) + (" (baseline)" if bool(r.get("baseline", False)) else "")
        rows.append({"model": name, "standing": r.get("standing") or "", "Δ vs strongest baseline [95 % CI]":
                     delta_text(r), "avg_score": _num(r.get("avg_score")),
                     "vcc2026_avg_score": _num(r.get("vcc2026_avg_score")), "DES": _num(r.get("DES")),
                     "PDS": _num(r.get("PDS")), "MAE": _num(r.get("MAE")),
                     "equals": r.get("equals") if isinstance(r.get("equals"), str) else ""})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if out["vcc2026_avg_score"].isna().all():  # profile vcc2025, or data without counts
        out = out.drop(columns="vcc2026_avg_score")
    return out


def _md_table(df: pd.DataFrame) -> str:
    fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else (  # noqa: E731
        f"{v:.4f}" if isinstance(v, float) else str(v))
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


LEADERBOARD_NOTE = (
    "standing: better / worse than the strongest baseline (the baseline row with the highest avg_score), or tie "
    "where the paired bootstrap 95 % interval of Δ avg_score over perturbations covers 0. avg_score: VCC 2025's "
    "(cell-eval, profile vcc: DES, PDS, MAE scaled against the cell-mean baseline, 0 = baseline, 1 = perfect); "
    "vcc2026_avg_score: VCC 2026's (cell-eval2, preset vcc2026, on counts: 0 = the truth's generic-response "
    "baseline, 1 = its split-half replicate). A row named '<model> = <baseline> (λ 0)' is a shrunk model whose "
    "validated λ is 0: it is that baseline (column equals) and does not count as a model's result.")


def to_markdown(board: pd.DataFrame, *, title: str, lead: str | None = None) -> str:
    """leaderboard.md: the verdict table (:func:`summary_table`), then every metric in a collapsible table with the
    metrics' legend."""
    from pertpipe.evaluation.metric_registry import legend

    return (f"# {title}\n\n" + (f"**{lead}**\n\n" if lead else "") + _md_table(summary_table(board)) + "\n"
            + LEADERBOARD_NOTE + "\n\n<details><summary>All metrics (also in leaderboard.csv)</summary>\n\n"
            + f"{legend()}. Scores from cell-eval (profile vcc) where cell-eval has the metric, else from the local "
            "scorer; *_scaled = cell-eval score against the cell-mean baseline; Shrunk models "
            "(pertpipe.models.shrinkage) have two rows: `<model>_raw` (λ = 1, the model's own prediction) and "
            "`<model>` (λ as validated on held-out training groups, toward the anchor: global = cell_mean, "
            "cell_type = celltype_mean). delta = avg_score minus the strongest baseline's (`vs_baseline`), ci_low / "
            "ci_high its interval. `vcc2026_*`: each cell-eval2 metric's raw mean and, as `_scaled`, its score "
            "between the generic-response baseline (0) and the split-half replicate (1).\n\n"
            + _md_table(labelled(board)) + "\n</details>\n")


def write_leaderboard(board: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, *,
                      title: str, lead: str | None = None) -> None:
    with atomic_path(csv_path) as tmp:
        board.to_csv(tmp, index=False)
    write_text(to_markdown(board, title=title, lead=lead), md_path)


def _fig_to_img(fig) -> str:
    return report_page.figure(fig)


def standing_figure(board: pd.DataFrame):
    """Δ avg_score vs the strongest baseline per row with its 95 % interval, sorted, as horizontal bars: one label a
    line at a fixed size, the figure as tall as the rows need, so labels never overlap (the strongest baseline is
    the 0 line). Returns the matplotlib figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board[board["delta"].notna()] if "delta" in board else board.iloc[0:0]
    rows = rows.assign(delta=rows["delta"].astype(float)).sort_values("delta")
    ref = board.loc[board["standing"] == "strongest baseline", "model"] if "standing" in board else []
    fig, ax = plt.subplots(figsize=(7.5, 1.1 + 0.32 * max(len(rows), 1)))
    if len(rows):
        y = np.arange(len(rows))
        d = rows["delta"].to_numpy()
        err = np.vstack([d - rows["ci_low"].astype(float).to_numpy(), rows["ci_high"].astype(float).to_numpy() - d])
        colours = {"better": "#2e7d32", "worse": "#c62828"}
        ax.barh(y, d, xerr=err, color=[colours.get(s, "#9e9e9e") for s in rows["standing"]], capsize=3, height=0.6)
        ax.set_yticks(y, [row_label(r) + (" (baseline)" if bool(r.get("baseline", False)) else "")
                          for _, r in rows.iterrows()], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"Δ avg_score vs the strongest baseline{f' ({list(ref)[0]})' if len(ref) else ''}, 95 % CI "
                  "(green better, red worse, grey tie)", fontsize=8)
    fig.tight_layout()
    return fig


def _plot_standing(board: pd.DataFrame) -> str:
    return report_page.figure(standing_figure(board), alt="delta vs the strongest baseline")


def _plot_deltas(pred_bulks: dict[str, pd.DataFrame], truth_bulk: pd.DataFrame, max_perts: int = 8) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perts = [p for p in truth_bulk.index if p != CONTROL_LABEL][:max_perts]
    models = list(pred_bulks)
    if not perts or not models:
        return "<p>No perturbations to plot.</p>"
    fig, axes = plt.subplots(len(models), len(perts), figsize=(2.1 * len(perts), 2.1 * len(models)), squeeze=False)
    real_ctrl = truth_bulk.loc[CONTROL_LABEL].to_numpy()
    for i, m in enumerate(models):
        pb = pred_bulks[m]
        pred_ctrl = pb.loc[CONTROL_LABEL].to_numpy()
        for j, p in enumerate(perts):
            ax = axes[i, j]
            r = truth_bulk.loc[p].to_numpy() - real_ctrl
            q = pb.loc[p].to_numpy() - pred_ctrl
            ax.scatter(r, q, s=3, alpha=0.5)
            corr = np.corrcoef(r, q)[0, 1] if np.std(r) > 0 and np.std(q) > 0 else float("nan")
            ax.text(0.04, 0.92, f"r = {corr:.2f}", transform=ax.transAxes, fontsize=7)
            lim = max(np.abs(r).max(), np.abs(q).max(), 1e-3)
            ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(p, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{m}\npred Δ", fontsize=8)
            if i == len(models) - 1:
                ax.set_xlabel("true Δ", fontsize=8)
    return _fig_to_img(fig)


def _peers_section(train_logs: dict[str, dict]) -> list[str]:
    """Peer models (trained by their authors' packages): package, version, licence and source, from train_log.json."""
    rows = [{"model": m, **tl["peer"]} for m, tl in sorted(train_logs.items()) if isinstance(tl.get("peer"), dict)]
    if not rows:
        return []
    return ["<h2>Peer models</h2>",
            "<p>Trained by their own packages on this split (the wrapper converts our data and reads their "
            "predictions back); their licences apply to their code.</p>", _table(pd.DataFrame(rows))]


def plot_losses(train_logs: dict[str, dict]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for m, tl in train_logs.items():
        if tl.get("stage_curves"):  # multi-stage models (CFM-VC): one curve per training stage
            curves.update({f"{m} ({stage})": c["loss"] for stage, c in tl["stage_curves"].items() if c["loss"]})
        elif tl.get("loss_curve"):
            curves[m] = tl["loss_curve"]
    if not curves:
        return "<p>No model in this run records a loss curve (the baselines are fitted in closed form).</p>"
    fig, ax = plt.subplots(figsize=(5, 3))
    for m, c in curves.items():
        ax.plot(c, label=m)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return _fig_to_img(fig)


def _plot_attention(attn: dict[str, pd.DataFrame]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = []
    for model, tab in attn.items():
        if tab is None or not len(tab):
            continue
        cts = sorted(tab["cell_type"].unique())
        fig, axes = plt.subplots(1, len(cts), figsize=(3.2 + 2.6 * len(cts), 0.32 * tab["target_gene"].nunique() + 1.8),
                                 squeeze=False)
        for ax, ct in zip(axes[0], cts):
            m = tab[tab.cell_type == ct].pivot(index="target_gene", columns="facet", values="weight")
            im = ax.imshow(m.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(m.shape[1]), [c.replace("_", " ") for c in m.columns], rotation=60, ha="right",
                          fontsize=7)
            ax.set_yticks(range(m.shape[0]), m.index if ax is axes[0][0] else [""] * m.shape[0], fontsize=7)
            ax.set_title(f"{model}: {ct}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="attention α")
        parts.append(_fig_to_img(fig))
    return "".join(parts) or "<p>No model in this run has facet attention.</p>"


def _table(df: pd.DataFrame) -> str:
    return report_page.table(df)


def html_report(*, dataset: str, board: pd.DataFrame, stage1: dict[str, Any], consistency: dict[str, dict],
                train_logs: dict[str, dict], pred_bulks: dict[str, pd.DataFrame], truth_bulk: pd.DataFrame,
                versions: dict[str, str], attention: dict[str, pd.DataFrame] | None = None,
                standing: dict[str, Any] | None = None, links: str = "") -> str:
    """The whole report as one HTML string (images inlined as base64 PNG; ``links``: the run's files)."""
    chk = stage1["checks"]
    s1 = pd.DataFrame([
        ("cells (train / val)", f"{stage1['split']['n_cells']['train']:,} / {stage1['split']['n_cells']['val']:,}"),
        ("genes (universe)", f"{stage1['alignment']['universe_size']:,}"),
        ("matched / rescued / filled / dropped", f"{stage1['alignment']['matched']:,} / "
         f"{stage1['alignment']['rescued_by_alias']} / {stage1['alignment']['filled_with_zeros']:,} / "
         f"{stage1['alignment']['dropped']:,}"),
        ("split", f"{stage1['split']['strategy']} (seed {stage1['split']['seed']}), "
         f"{len(stage1['split']['val_targets'])} held-out perturbations"),
        ("gene order match", f"{chk['gene_order_match']:.2%}"),
        ("held-out perturbations in train", str(chk["train_val_target_overlap"])),
    ], columns=["stage 1", "value"])
    cons = pd.DataFrame([{"model": m, "cell-eval run by": c.get("engine", "cell-eval"),
                          **{f"{k} max |Δ|": v["max_abs_diff"] for k, v in c["metrics"].items()}}
                         for m, c in consistency.items()])
    parts = [
        *([f"<p class='verdict'><strong>{html.escape(standing['verdict'])}</strong></p>"] if standing else []),
        "<h2>Leaderboard</h2>", _table(summary_table(board)),
        f"<p>{html.escape(LEADERBOARD_NOTE)}</p>", _plot_standing(board),
        "<details><summary>All metrics (also in leaderboard.csv)</summary><div class='wide'>",
        _table(labelled(board)), "</div>",
        "<p>Scaled scores come from <code>cell-eval score</code> against the cell-mean baseline "
        "(<code>cell-eval baseline</code>'s definition): 0 = baseline, 1 = perfect, clipped at 0.</p>",
        "<p>Shrunk models have two rows: <code>&lt;model&gt;_raw</code> (λ = 1, the model's own prediction) and "
        "<code>&lt;model&gt;</code> with λ validated on held-out training groups toward its anchor (global = "
        "<code>cell_mean</code>, cell_type = <code>celltype_mean</code>). A row at λ = 0 <em>is</em> that baseline "
        "and is labelled so; <code>shrinkage</code> says how λ was set (or why the model is used raw). "
        "<code>delta</code> is a row's avg_score minus the strongest baseline's (<code>vs_baseline</code>), with the "
        "paired bootstrap 95 % interval over perturbations; <code>tie</code> where the interval covers 0. "
        "DES, PDS, MAE and their <code>_scaled</code> scores are VCC 2025's (<code>cell-eval</code>, profile vcc); "
        "<code>vcc2026_*</code> columns are VCC 2026's (<code>cell-eval2</code>, preset vcc2026, on counts: 0 = the "
        "truth's generic-response baseline, 1 = its split-half replicate); the other metrics are the local "
        "scorer's.</p></details>",
        "<h2>Predicted vs true change per perturbation</h2>",
        "<p>Each point is a gene: x = true pseudobulk change from control, y = predicted change; r = Pearson "
        "correlation of the two.</p>",
        _plot_deltas(pred_bulks, truth_bulk),
        "<h2>Training</h2>", plot_losses(train_logs),
        *_peers_section(train_logs),
        "<h2>Facet attention</h2>",
        "<p>Mean attention over sampled control cells, per held-out target and cell type: which functional "
        "facets of the target gene the model uses in that cellular context (exact zeros from sparsemax).</p>",
        _plot_attention(attention or {}),
        "<h2>Local scorer vs cell-eval</h2>", _table(cons) if len(cons) else "<p>-</p>",
        "<p>'local' in the first column: the predictions were above <code>evaluation.run_engine</code>'s size, so "
        "results.csv is the local scorer's own and there is nothing to compare (empty cells).</p>",
        "<h2>Stage 1</h2>", _table(s1),
        "<h2>Versions</h2>", _table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"])), links,
    ]
    return report_page.page(report_page.task_title("cells", dataset), parts)


def consistency(celleval_results: str | os.PathLike, local_results: pd.DataFrame) -> dict[str, Any]:
    """Per metric and perturbation: the local scorer's value minus cell-eval's."""
    ce = pd.read_csv(celleval_results).set_index("perturbation")
    lo = local_results.set_index("perturbation")
    if set(ce.index) != set(lo.index):
        raise ValueError(f"perturbations differ: cell-eval {sorted(ce.index)[:5]} vs local {sorted(lo.index)[:5]}")
    from pertpipe.evaluation.metric_registry import metrics

    out: dict[str, Any] = {"metrics": {}}
    for metric in metrics(in_cell_eval=True):
        m, col = metric.name, metric.column
        d = lo.loc[ce.index, col] - ce[col]
        out["metrics"][m] = {"max_abs_diff": float(d.abs().max()), "mean_abs_diff": float(d.abs().mean()),
                             "per_perturbation": {p: {"cell_eval": float(ce.loc[p, col]), "local": float(lo.loc[p, col])}
                                                  for p in ce.index}}
    return out


def read_bulk(path: str | os.PathLike) -> pd.DataFrame:
    from pertpipe.data.pseudobulk import pseudobulk_means

    means, _ = pseudobulk_means(path)
    return means

