"""Leaderboard (csv + markdown) and the self-contained HTML report with plots."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import report_page
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

    return (f"# {title}\n\n" + (f"**{lead}**\n\n" if lead else "") + report_page.markdown_table(summary_table(board)) + "\n" + "\n"
            + LEADERBOARD_NOTE + "\n\n<details><summary>All metrics (also in leaderboard.csv)</summary>\n\n"
            + f"{legend()}. Scores from cell-eval (profile vcc) where cell-eval has the metric, else from the local "
            "scorer; *_scaled = cell-eval score against the cell-mean baseline; Shrunk models "
            "(pertpipe.models.shrinkage) have two rows: `<model>_raw` (λ = 1, the model's own prediction) and "
            "`<model>` (λ as validated on held-out training groups, toward the anchor: global = cell_mean, "
            "cell_type = celltype_mean). delta = avg_score minus the strongest baseline's (`vs_baseline`), ci_low / "
            "ci_high its interval. `vcc2026_*`: each cell-eval2 metric's raw mean and, as `_scaled`, its score "
            "between the generic-response baseline (0) and the split-half replicate (1).\n\n"
            + report_page.markdown_table(labelled(board)) + "\n" + "\n</details>\n")


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
