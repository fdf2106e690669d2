"""The cells task's evaluation page: the leaderboard verdict and figure, predicted vs true change per perturbation,
training curves, peer models, facet attention, the local scorer against cell-eval, stage 1 and versions
(:func:`html_report`); the leaderboard itself is :mod:`pertpipe.evaluation.report`'s."""

from __future__ import annotations

import html
import os
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL, report_page
from pertpipe.evaluation.report import LEADERBOARD_NOTE, labelled, plot_losses, standing_figure, summary_table

SECTION = "Perturbation response (cells)"  # the report's title section


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
    return report_page.figure(fig)


def _peers_section(train_logs: dict[str, dict]) -> list[str]:
    """Peer models (trained by their authors' packages): package, version, licence and source, from train_log.json."""
    rows = [{"model": m, **tl["peer"]} for m, tl in sorted(train_logs.items()) if isinstance(tl.get("peer"), dict)]
    if not rows:
        return []
    return ["<h2>Peer models</h2>",
            "<p>Trained by their own packages on this split (the wrapper converts our data and reads their "
            "predictions back); their licences apply to their code.</p>", _table(pd.DataFrame(rows))]


def _prior_choice(log: dict[str, Any]) -> tuple[str, str]:
    """(the prior in words, its cross-fitted score beside the best single candidate's) from train_log.json's record
    of it (:meth:`pertpipe.models.prior.BaselinePrior.log`), per kind where chosen per kind."""
    def one(ch: dict[str, Any]) -> tuple[str, str]:
        sc, best = ch.get("crossfit_score") or {}, ch.get("best_single")
        score = (f"{sc[ch['chosen']]['score']:.3f} (best single: {best} {sc[best]['score']:.3f})"
                 if best in sc and ch["chosen"] in sc else "—")
        return ch.get("display", ch["chosen"]), score

    if log.get("by_kind"):
        parts = {kd: one(ch) for kd, ch in log["by_kind"].items()}
        return tuple("; ".join(f"{kd}s: {v[i]}" for kd, v in parts.items()) for i in (0, 1))
    return one(log)


def _prior_section(train_logs: dict[str, dict]) -> list[str]:
    """What each model is built on (its validated baseline prior or centre) and what its network added on the
    validation groups, from train_log.json."""
    rows = []
    for m, tl in sorted(train_logs.items()):
        log = tl.get("prior") or tl.get("centre")
        if not isinstance(log, dict) or "chosen" not in log:
            continue
        gain = tl.get("residual_gain") or {}
        mse = gain.get("mse_by_scale") or {}
        gamma = gain.get("scale")
        added = (f"{mse['0']:.4g} → {mse[f'{gamma:g}']:.4g} on {gain.get('groups')} groups"
                 if gamma is not None and "0" in mse and f"{gamma:g}" in mse else "—")
        built_on, score = _prior_choice(log)
        dc = tl.get("decode_choice") or {}
        err = dc.get("lfc_mae") or {}
        cells = (f"{dc['chosen']} (fold-change error on {dc.get('groups')} validation groups: "
                 + ", ".join(f"{k} {v:.3g}" for k, v in sorted(err.items()) if v is not None) + ")"
                 if "chosen" in dc else tl.get("decode", "—"))
        rows.append({"model": m, "built on": built_on, "chosen by": log.get("criterion", ""),
                     "cross-fitted score": score, "γ (network share)": "—" if gamma is None else f"{gamma:g}",
                     "validation MSE: prior → prior + γ × network": added, "cells (CFM-VC decode)": cells})
    if not rows:
        return []
    return ["<h2>Built on a baseline</h2>",
            "<p>The prior (DyGenePT) or centre (CFM-VC) each model is built on: the baseline an unseen perturbation "
            "would get, chosen on cross-fitted training groups by an avg_score-like score among the candidates, the "
            "blends of the two best and, where training has enough of both, per kind (singles / combinations). "
            "The network adds γ × its correction; at γ = 0 the model is its prior (docs/models.md). CFM-VC's cells "
            "around its centre are its decoded draws (sample) or the drawn controls each plus the flow's change for "
            "it (paired), whichever was closer to the validation targets' fold changes.</p>",
            _table(pd.DataFrame(rows))]


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
        parts.append(report_page.figure(fig))
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
        *_prior_section(train_logs),
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
    return report_page.page(report_page.task_title(SECTION, dataset), parts)


def read_bulk(path: str | os.PathLike) -> pd.DataFrame:
    from pertpipe.data.pseudobulk import pseudobulk_means

    means, _ = pseudobulk_means(path)
    return means
