"""Honest leaderboards: λ/anchor/equals columns, Δ vs the strongest baseline with its CI and tie mark, the split-half
ceiling and the dataset verdict (pertpipe.evaluation.standing, pertpipe.evaluation.report)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertpipe.evaluation.report import leaderboard, to_markdown
from pertpipe.evaluation.standing import add_standing, avg_scores, paired_bootstrap, split_half_ceiling

COLS = {"DES": "overlap_at_N", "PDS": "discrimination_score_l1", "MAE": "mae"}


def _results(des, pds, mae, n=None):
    n = n or len(des)
    return pd.DataFrame({"perturbation": [f"p{i}" for i in range(n)], "overlap_at_N": des,
                         "discrimination_score_l1": pds, "mae": mae})


def _write_row(tmp, model, *, lam=None, equals=None, anchor="global", avg=0.1):
    d = tmp / model
    d.mkdir()
    raw = {"DES": 0.1, "PDS": 0.6, "MAE": 0.2}
    (d / "score.json").write_text(json.dumps({"raw": raw, "scaled": {k: avg for k in raw}, "avg_score": avg}))
    (d / "train_log.json").write_text(json.dumps({"wall_s": 1.0}))
    shrink = None if lam is None else {"lambda": lam, "anchor": anchor, "equals": equals, "how": "validated"}
    (d / "predict.json").write_text(json.dumps({"shrinkage": shrink}))
    return {k: d / f"{k}.json" for k in ("score", "train_log", "predict")}


def _board(rows):
    return leaderboard({m: r["score"] for m, r in rows.items()}, {m: r["train_log"] for m, r in rows.items()},
                       None, {m: r["predict"] for m, r in rows.items()})


def test_a_lambda_zero_row_says_which_baseline_it_equals(tmp_path):
    rows = {"cell_mean": _write_row(tmp_path, "cell_mean", avg=0.0),
            "cfmvc": _write_row(tmp_path, "cfmvc", lam=0.0, equals="celltype_mean", anchor="cell_type", avg=0.0),
            "cfmvc_raw": _write_row(tmp_path, "cfmvc_raw", lam=1.0, anchor=None, avg=0.05)}
    board = _board(rows).set_index("model")
    assert board.loc["cfmvc", "lambda"] == 0.0 and board.loc["cfmvc", "anchor"] == "cell_type"
    assert board.loc["cfmvc", "equals"] == "celltype_mean" and board.loc["cfmvc_raw", "lambda"] == 1.0
    assert pd.isna(board.loc["cell_mean", "lambda"])
    md = to_markdown(board.reset_index(), title="t")
    assert "| cfmvc = celltype_mean (λ 0) |" in md and "| cfmvc_raw |" in md
    # a λ = 0 row that does not name its baseline is refused, not printed
    bad = {"dygenept": _write_row(tmp_path, "dygenept", lam=0.0, equals=None)}
    with pytest.raises(ValueError, match="dygenept has λ = 0 but does not say which baseline"):
        _board(bad)


def test_avg_score_from_per_perturbation_tables_is_cell_eval_scores():
    base = _results([0.2, 0.4], [0.5, 0.7], [0.2, 0.4])
    user = _results([0.5, 0.5], [0.8, 0.8], [0.15, 0.15])
    # DES: (0.5-0.3)/(1-0.3); PDS: (0.8-0.6)/(1-0.6); MAE: (0.3-0.15)/0.3; worse than baseline clips at 0
    assert avg_scores(user, base) == pytest.approx(np.mean([0.2 / 0.7, 0.2 / 0.4, 0.5]))
    assert avg_scores(base, base) == 0.0
    assert avg_scores(_results([0.0, 0.0], [0.1, 0.1], [0.9, 0.9]), base) == 0.0


def test_paired_bootstrap_marks_ties_and_clear_differences():
    rng = np.random.default_rng(0)
    n = 40
    base = _results(rng.uniform(0.1, 0.3, n), rng.uniform(0.5, 0.6, n), rng.uniform(0.2, 0.3, n))
    ref = _results(base.overlap_at_N + 0.05, base.discrimination_score_l1 + 0.05, base.mae - 0.01)
    clear = _results(ref.overlap_at_N + 0.2, ref.discrimination_score_l1 + 0.2, ref.mae - 0.05)
    noisy = _results(ref.overlap_at_N + rng.normal(0, 0.05, n), ref.discrimination_score_l1 + rng.normal(0, 0.05, n),
                     ref.mae + rng.normal(0, 0.005, n))
    better = paired_bootstrap([(clear, ref, base)])
    assert better["ci_low"] > 0 and not better["tie"] and better["delta"] == pytest.approx(
        avg_scores(clear, base) - avg_scores(ref, base))
    assert paired_bootstrap([(noisy, ref, base)])["tie"]
    # seeds pooled: the mean of the per-seed differences
    two = paired_bootstrap([(clear, ref, base), (ref, ref, base)])
    assert two["delta"] == pytest.approx(better["delta"] / 2) and two["runs"] == 2


def test_add_standing_compares_with_the_strongest_baseline(tmp_path):
    rng = np.random.default_rng(1)
    n = 30
    base = _results(rng.uniform(0.1, 0.3, n), rng.uniform(0.5, 0.6, n), rng.uniform(0.2, 0.3, n))
    tables = {"cell_mean": base, "linear": _results(base.overlap_at_N + 0.1, base.discrimination_score_l1 + 0.1,
                                                    base.mae - 0.02)}
    tables["deep"] = _results(tables["linear"].overlap_at_N + rng.normal(0, 0.03, n),
                              tables["linear"].discrimination_score_l1 + rng.normal(0, 0.03, n), tables["linear"].mae)
    paths = {}
    for m, t in tables.items():
        paths[m] = tmp_path / f"{m}.csv"
        t.to_csv(paths[m], index=False)
    board = pd.DataFrame({"model": list(tables), "avg_score": [avg_scores(t, base) for t in tables.values()]})
    out = add_standing(board, paths, paths["cell_mean"], ["cell_mean", "linear"]).set_index("model")
    assert out.loc["linear", "standing"] == "strongest baseline" and out.loc["deep", "vs_baseline"] == "linear"
    assert out.loc["deep", "standing"] == "tie" and out.loc["cell_mean", "standing"] == "worse"


def test_split_half_ceiling_scores_a_real_signal_and_flags_none(tmp_path):
    rng = np.random.default_rng(2)
    genes = [f"g{i}" for i in range(40)]

    def write(path, shift):
        labels = ["non-targeting"] * 60 + [p for p in ("A", "B", "C", "D", "E", "F") for _ in range(30)]
        x = rng.poisson(3.0, size=(len(labels), len(genes))).astype(np.float32)
        for k, p in enumerate("ABCDEF"):
            rows = [i for i, lab in enumerate(labels) if lab == p]
            x[np.ix_(rows, range(6 * k, 6 * k + 6))] += shift
        obs = pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(labels))])
        ad.AnnData(np.log1p(x), obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)

    write(tmp_path / "base.h5ad", 0.0)  # the 'baseline' file: no perturbation effect
    write(tmp_path / "strong.h5ad", 12.0)
    write(tmp_path / "none.h5ad", 0.0)
    strong = split_half_ceiling(tmp_path / "strong.h5ad", tmp_path / "base.h5ad", n_boot=300)
    assert strong["can_rank"] and strong["avg_score"] > 0.3 and strong["perturbations"] == 6
    assert split_half_ceiling(tmp_path / "none.h5ad", tmp_path / "base.h5ad", n_boot=300)["can_rank"] is False


def test_e_distance_by_hand():
    import scipy.sparse as sp

    from pertpipe.evaluation.de import Expression
    from pertpipe.evaluation.metric_registry import metrics
    from pertpipe.evaluation.metrics import e_distances

    rng = np.random.default_rng(3)
    g = 6
    ctrl = rng.normal(5, 1, (200, g))
    x = rng.normal(5, 1, (40, g))
    labels = np.array(["non-targeting"] * 200 + ["A"] * 40)
    genes = np.array([f"g{i}" for i in range(g)])
    real = Expression(sp.csr_matrix(np.vstack([ctrl, x])), labels, genes)
    shift = np.array([1.0, -2.0, 0, 0, 0.5, 0])
    same = Expression(sp.csr_matrix(np.vstack([ctrl, x])), labels, genes)
    moved = Expression(sp.csr_matrix(np.vstack([ctrl, x + shift])), labels, genes)
    # every PCA axis kept (an orthonormal rotation): the same cells give 0, a shift c gives 2|c|²
    assert e_distances(real, same, n_pcs=g)["A"] == pytest.approx(0.0, abs=1e-9)
    assert e_distances(real, moved, n_pcs=g)["A"] == pytest.approx(2 * (shift ** 2).sum(), rel=1e-9)
    # one mean per perturbation (no spread): pertpy's squared form sees only means (0), the energy distance does not
    flat = Expression(sp.csr_matrix(np.vstack([ctrl, np.repeat(x.mean(0, keepdims=True), 40, 0)])), labels, genes)
    assert e_distances(real, flat, n_pcs=g)["A"] == pytest.approx(0.0, abs=1e-9)
    d = np.sqrt(((x - x.mean(0)) ** 2).sum(1))
    pair = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    assert e_distances(real, flat, n_pcs=g, squared=False)["A"] == pytest.approx(2 * d.mean() - pair.mean(), rel=1e-9)
    assert e_distances(real, flat, n_pcs=g, squared=False)["A"] > 0.5
    assert e_distances(real, same, n_pcs=g, squared=False)["A"] == pytest.approx(0.0, abs=1e-9)
    assert {"edistance", "energy_distance"} <= {m.name for m in metrics(in_cell_eval=False)}


def _overlapping(labels, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text()]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]


def test_the_standing_figure_is_sorted_with_intervals_and_labels_that_never_overlap():
    """Δ vs the strongest baseline with CI bars, sorted, one label a line: no two tick labels' boxes overlap, with
    the names that used to print over each other (`celltype_mean`, `cfmvc = celltype_mean (λ 0)`) and many rows."""
    import matplotlib.pyplot as plt

    from pertpipe.evaluation.report import standing_figure

    rng = np.random.default_rng(0)
    names = ["celltype_mean", "cfmvc", "cell_mean", "dygenept_raw_with_a_long_alias_name"] + [f"m{i}" for i in range(26)]
    d = rng.normal(0, 0.1, len(names))
    board = pd.DataFrame({"model": names, "delta": d, "ci_low": d - 0.05, "ci_high": d + 0.05,
                          "standing": ["tie"] * len(names), "baseline": [True, False] + [False] * (len(names) - 2),
                          "lambda": [None, 0.0] + [None] * (len(names) - 2),
                          "equals": [None, "celltype_mean"] + [None] * (len(names) - 2)})
    board = pd.concat([board, pd.DataFrame([{"model": "knowledge_ridge", "standing": "strongest baseline",
                                             "baseline": True}])], ignore_index=True)
    for rows in (board.iloc[[0, 1, -1]], board):
        fig = standing_figure(rows.reset_index(drop=True))
        fig.canvas.draw()
        ax = fig.axes[0]
        labels = ax.get_yticklabels()
        assert _overlapping(labels, fig.canvas.get_renderer()) == []
        shown = [t.get_text() for t in labels]
        assert "cfmvc = celltype_mean (λ 0)" in shown and "celltype_mean (baseline)" in shown
        assert "knowledge_ridge" not in " ".join(shown)  # the reference is the 0 line, named on the axis
        assert "knowledge_ridge" in ax.get_xlabel()
        widths = [p.get_width() for p in ax.patches]
        assert widths == sorted(widths)  # sorted by Δ
        from matplotlib.container import ErrorbarContainer

        assert any(isinstance(c, ErrorbarContainer) and c.has_xerr for c in ax.containers)  # 95 % intervals drawn
        plt.close(fig)


def test_paired_standing_of_the_signature_and_label_leaderboards():
    """Per key (a signature, a readout gene): Δ against the strongest baseline is the mean paired difference, over the
    keys both score; rows without values (published rows) get no standing."""
    from pertpipe.evaluation.standing import add_paired_standing

    keys = [f"g{i}" for i in range(40)]
    rng = np.random.default_rng(1)
    base = pd.Series(rng.uniform(0.5, 0.6, 40), index=keys)
    weak = base - 0.05
    values = {"ridge": base, "knn": weak, "deep": base + 0.03 + rng.normal(0, 0.001, 40),
              "noisy": base + rng.normal(0, 0.1, 40)}
    values["deep"].iloc[:5] = np.nan  # keys a model does not score are left out of its pairs
    board = pd.DataFrame({"model": ["deep", "ridge", "noisy", "knn", "SUMMER"],
                          "auc": [float(values[m].mean()) for m in ("deep", "ridge", "noisy", "knn")] + [0.7]})
    out = add_paired_standing(board, values, ["ridge", "knn"], score="auc").set_index("model")
    assert out.loc["ridge", "standing"] == "strongest baseline" and out.loc["knn", "standing"] == "worse"
    assert out.loc["deep", "standing"] == "better" and out.loc["noisy", "standing"] == "tie"
    d = (values["deep"] - base).dropna()
    assert out.loc["deep", "delta"] == pytest.approx(d.mean()) and out.loc["deep", "ci_low"] > 0
    assert bool(out.loc["knn", "baseline"]) and not bool(out.loc["deep", "baseline"])
    assert out.loc["SUMMER", "standing"] is None and pd.isna(out.loc["SUMMER", "delta"])
