"""The spatial branch's report: every artifact listed, the per-gene metric table, communication recovery, and
spatial maps of LR genes (measured, imputed, held-out truth)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pertpipe import report_page
from pertpipe.core.h5io import read_anndata
from pertpipe.io import atomic_path, read_json, write_json, write_text

SECTION = "Spatial LR imputation"  # the report's title section


def _map(ax, xy: np.ndarray, v: np.ndarray, title: str) -> None:
    ax.scatter(xy[:, 0], xy[:, 1], c=v, s=6, cmap="viridis", linewidths=0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    ax.invert_yaxis()


def report_genes(per_gene: pd.DataFrame, n: int) -> list[str]:
    """Held-out genes to show: spread over lrimpute's PCC range (best, median, worst, ...), not the best only."""
    s = per_gene[per_gene.method == "lrimpute"].sort_values("pcc", ascending=False)
    if s.empty:
        return []
    pos = np.unique(np.linspace(0, len(s) - 1, min(n, len(s))).round().astype(int))
    return list(s.gene.iloc[pos])


def maps_figure(heldout_path: str, imputed_path: str, genes: list[str], out_png: str, *, n_unmeasured: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, imp = read_anndata(heldout_path), read_anndata(imputed_path)
    xy = np.asarray(h.obsm["spatial"])
    methods = [m for m in ("lrimpute", "knn_mean", "tangram") if m in h.layers]
    unmeasured = [g for g in imp.var_names[~imp.var["measured_in_spatial"].to_numpy()]]
    unmeasured = sorted(unmeasured, key=lambda g: -float(np.asarray(imp[:, g].X).var()))[:n_unmeasured]
    ncol = 1 + len(methods)
    nrow = len(genes) + (1 if unmeasured else 0)
    fig, axes = plt.subplots(max(1, nrow), max(ncol, len(unmeasured)), figsize=(2.4 * max(ncol, len(unmeasured)),
                                                                                   2.4 * max(1, nrow)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, g in enumerate(genes):
        j = list(h.var_names).index(g)
        axes[r, 0].axis("on")
        _map(axes[r, 0], xy, np.asarray(h.X[:, j]), f"{g}: measured (held out)")
        for c, m in enumerate(methods, start=1):
            axes[r, c].axis("on")
            _map(axes[r, c], xy, np.asarray(h.layers[m][:, j]), f"{g}: {m}")
    for c, g in enumerate(unmeasured):
        ax = axes[len(genes), c]
        ax.axis("on")
        _map(ax, xy, np.asarray(imp[:, g].X).ravel(), f"{g}: imputed (not measured)")
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def metrics_figure(per_gene_csv: str, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pg = pd.read_csv(per_gene_csv)
    order = pg.groupby("method")["pcc"].median().sort_values(ascending=False).index.tolist()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for ax, metric in zip(axes, ("pcc", "ssim", "rmse", "js")):
        ax.boxplot([pg[pg.method == m][metric].to_numpy() for m in order], showfliers=False)
        ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric.upper(), fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def spatial_report(dataset: str, artifacts: dict[str, str], *, n_genes: int, out_json: str, out_txt: str,
                   out_maps: str, out_metrics: str) -> dict[str, Any]:
    """The review as JSON and text and its two figures; the run's page (``results/{dataset}/report.html``) is
    :func:`render_html` of the JSON, written by :func:`pertpipe.evaluation.run_report.write_run_report`."""
    inputs, lr = read_json(artifacts["inputs_json"]), read_json(artifacts["lr_genes"])
    priors, knn = read_json(artifacts["priors_json"]), read_json(artifacts["knn_json"])
    train, evaluation = read_json(artifacts["train_json"]), read_json(artifacts["evaluation"])
    comm = read_json(artifacts["communication"])
    per_gene = pd.read_csv(artifacts["per_gene"])
    genes = report_genes(per_gene, n_genes)
    maps_figure(artifacts["heldout"], artifacts["imputed"], genes, out_maps)
    metrics_figure(artifacts["per_gene"], out_metrics)
    rep = {
        "dataset": dataset, "artifacts": artifacts, "figures": {"maps": out_maps, "metrics": out_metrics},
        "inputs": {k: inputs[k] for k in ("spatial", "scrna", "shared_genes", "species")},
        "lr_genes": {k: v for k, v in lr.items() if k.startswith("n_")} | {
            "resource": lr["resource"], "measured_in_spatial": len(lr["measured_in_spatial"]),
            "not_measured_in_spatial": len(lr["not_measured_in_spatial"]), "n_pairs_usable": len(lr["pairs"]),
            "heldout_eligible": len(lr["heldout_eligible"])},
        "priors": priors, "knn_labels": knn, "train": train,
        "evaluation": {k: evaluation[k] for k in ("summary", "lrimpute_vs", "n_heldout_genes", "unavailable")},
        "communication": comm, "map_genes": genes,
    }
    write_json(rep, out_json)
    write_text(render_text(rep), out_txt)
    return rep


def validation_table(rep: dict[str, Any]) -> pd.DataFrame:
    """What the validation genes chose for the imputation (knn_labels) and in each evaluation fold: k, the neighbour
    set, the residual transfer's strength, the expression regression's weight and ridge size, the smoothing weight,
    the output's offset and whether each prior was kept."""
    rows = []
    runs = [("imputation", rep["knn_labels"].get("validation"))] + [
        (f"fold {i + 1}", v) for i, v in enumerate(rep["evaluation"].get("validation_per_fold") or [])]
    for where, v in runs:
        if not v:
            continue
        pr = (v.get("scores") or {}).get("priors") or {}
        why = "; ".join(f"{k} {x:.3f}" if isinstance(x, float) else f"{k}: {x}" for k, x in pr.items())
        rows.append({"where": where, "k": v["k"], "neighbours": v.get("neighbours", "latent"),
                     "residual strength": v["residual_strength"],
                     "regression weight": v.get("regression_weight", 0.0),
                     "regression alpha": v.get("regression_alpha", 0.0) if v.get("regression_weight") else "-",
                     "smoothing weight": v["smooth"], "offset": v.get("offset", 0.0),
                     "depth step": bool(v.get("depth", False)), "PPI kept": v["ppi"], "ligand->target kept": v["ligand_target"],
                     "validation genes": v["n_validation_genes"], "priors on validation (median PCC)": why})
    return pd.DataFrame(rows)


def render_html(rep: dict[str, Any], links: str = "") -> str:
    """The spatial report as one page: the inputs, the metric table (medians over held-out LR genes; the metric
    table's ``spatial`` entries), lrimpute against each method, what validation chose, communication recovery, the
    figures inlined, and ``links`` (the run's files)."""
    i, lr, ev, c = rep["inputs"], rep["lr_genes"], rep["evaluation"], rep["communication"]
    facts = pd.DataFrame([
        ("spatial", f"{i['spatial']['n_spots']} spots x {i['spatial']['n_genes']} genes"),
        ("scRNA-seq", f"{i['scrna']['n_cells']} cells x {i['scrna']['n_genes']} genes, "
                      f"{len(i['scrna']['cell_types'])} cell types"),
        ("shared genes", str(i["shared_genes"])),
        ("LR genes imputed", f"{lr['n_lr_genes_expressed']} ({lr['resource']}); {lr['measured_in_spatial']} measured "
                             f"in the slide, {lr['heldout_eligible']} held out in k folds"),
        ("priors", f"PPI {rep['priors'].get('ppi')} ({rep['priors'].get('ppi_edges', 0)} edges), ligand->target "
                   f"{rep['priors'].get('ligand_target')}"),
        ("kNN labels", f"k = {rep['knn_labels']['k']}, {rep['knn_labels']['n_distinct_matched_cells']} distinct "
                       "matched cells"),
    ], columns=["", "value"])
    summary = pd.DataFrame([{"method": m, **s} for m, s in ev["summary"].items()])
    versus = pd.DataFrame([{"method": m, **v} for m, v in ev["lrimpute_vs"].items()])
    comm = pd.DataFrame([{"imputation": w, **{k: v for k, v in c[w].items() if not isinstance(v, (dict, list))}}
                         for w in ("before", "after")])
    parts = ["<h2>Inputs</h2>", report_page.table(facts),
             f"<h2>Held-out LR genes ({ev['n_heldout_genes']}): medians per method</h2>", report_page.table(summary),
             "<p>PCC, SSIM (higher is better), RMSE, JS (lower is better) per held-out gene, medians over genes; AS = "
             "accuracy score (rank of each metric's median among the methods shown, averaged).</p>",
             *([f"<p>Not run: {report_page.escape(', '.join(f'{m} ({w})' for m, w in ev['unavailable'].items()))}</p>"]
               if ev["unavailable"] else []),
             "<h2>lrimpute against each method</h2>", report_page.table(versus) if len(versus) else "<p>-</p>",
             "<h2>What the validation genes chose</h2>",
             "<p>Every choice is made on validation genes: a share of the visible shared genes hidden from the slide "
             "as a held-out gene is. Neighbours: whose matched cells give the kNN mean (the latent space's, SpaGE's "
             "principal-vector kNN, or both). The residual transfer carries what a spot measures beyond its kNN mean to the LR "
             "genes (0 = off); the regression reads each LR gene from the spot's own profile through a ridge fitted on the scRNA "
             "cells and is blended into the kNN mean with this weight (0 = off; 1 = the regression alone); smoothing mixes "
             "a spot with its neighbours (0 = off); the depth step turns the output into what the slide would measure at "
             "each spot's depth (a Poisson count at its library size; kept only where the validation genes gain); the offset shifts the output up by that multiple of its mean across "
             "spots, chosen by SSIM (a shift: no correlation changes; 0 = off); a prior is kept only if lrimpute "
             "predicts the LR validation genes better with it than without it.</p>",
             report_page.table(validation_table(rep)) if len(validation_table(rep)) else "<p>-</p>",
             "<h2>Metrics per held-out gene</h2>", report_page.png_file(rep["figures"]["metrics"], "metrics"),
             f"<h2>Maps ({report_page.escape(', '.join(rep['map_genes']))})</h2>",
             report_page.png_file(rep["figures"]["maps"], "maps"),
             f"<h2>Communication recovery ({c['n_pairs']} LR pairs)</h2>", report_page.table(comm), links]
    return report_page.page(report_page.task_title(SECTION, rep["dataset"]), parts)


def render_text(rep: dict[str, Any]) -> str:
    i, lr, ev = rep["inputs"], rep["lr_genes"], rep["evaluation"]
    lines = [f"Spatial LR imputation: {rep['dataset']} ({i['species']})",
             f"spatial: {i['spatial']['n_spots']} spots x {i['spatial']['n_genes']} genes (median UMI "
             f"{i['spatial']['median_umi']:.0f}); scRNA: {i['scrna']['n_cells']} cells x {i['scrna']['n_genes']} genes, "
             f"{len(i['scrna']['cell_types'])} cell types; {i['shared_genes']} genes shared",
             f"LR genes ({lr['resource']}): {lr['n_lr_genes_resource']} in the resource, {lr['n_lr_genes_in_scrna']} in "
             f"the scRNA-seq, {lr['n_lr_genes_expressed']} expressed -> imputed; {lr['measured_in_spatial']} measured "
             f"in the spatial data ({lr['heldout_eligible']} held out in k folds), {lr['not_measured_in_spatial']} not",
             f"priors: PPI {rep['priors'].get('ppi')} ({rep['priors'].get('ppi_edges', 0)} edges among LR genes), "
             f"ligand->target {rep['priors'].get('ligand_target')}",
             f"kNN labels: k={rep['knn_labels']['k']}, {rep['knn_labels']['n_distinct_matched_cells']} distinct "
             f"matched cells, {100 * rep['knn_labels']['masked_fraction']:.1f}% of (spot, gene) masked",
             "validated: " + ", ".join(f"{r['where']}: {r['neighbours']} neighbours, residual {r['residual strength']:g}, "
                                       f"regression {r['regression weight']:g}, smoothing "
                                       f"{r['smoothing weight']:g}, depth step {'on' if r['depth step'] else 'off'}, offset {r['offset']:g}, PPI {'on' if r['PPI kept'] else 'off'}, "
                                       f"ligand->target {'on' if r['ligand->target kept'] else 'off'}"
                                       for r in validation_table(rep).to_dict("records")),
             "", f"Held-out LR genes ({ev['n_heldout_genes']}), medians per method:",
             f"{'method':<20}{'PCC':>8}{'SSIM':>8}{'RMSE':>8}{'JS':>8}{'AS':>7}  lrimpute better on"]
    for m, s in ev["summary"].items():
        vs = ev["lrimpute_vs"].get(m)
        tail = f"  {vs['genes_lrimpute_better']}/{vs['n_genes']} genes" if vs else ""
        lines.append(f"{m:<20}{s['pcc']:>8.4f}{s['ssim']:>8.4f}{s['rmse']:>8.4f}{s['js']:>8.4f}{s['as']:>7.3f}{tail}")
    for m, why in ev["unavailable"].items():
        lines.append(f"{m:<20} not run: {why}")
    c = rep["communication"]
    lines += ["", f"Communication recovery ({c['n_pairs']} LR pairs, {c['n_edges']} neighbour edges):"]
    for when in ("before", "after"):
        s = c[when]
        top = [k for k in s if k.startswith("top")][0]
        lines.append(f"  {when:<7} pairs scored {s['n_pairs_scored']:>5}   Spearman vs scRNA expectation "
                     f"{s['spearman_vs_expected']:.3f}   {top} {s[top]:.2f}")
    lines += ["", f"maps: {rep['figures']['maps']} (genes {', '.join(rep['map_genes'])})",
              f"metrics: {rep['figures']['metrics']}"]
    return "\n".join(lines) + "\n"
