"""The metric table: one register_metric call reaches the local scorer, the leaderboard and its legend."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertpipe.evaluation.metric_registry import METRICS, Metric, metrics, register_metric, unregister_metric
from pertpipe.evaluation.report import leaderboard, leaderboard_columns, to_markdown
from pertpipe.evaluation.scoring import score_local
from pertpipe.io import write_json


def _write(path, rows, genes):
    labels, X = [], []
    for lab, cells in rows.items():
        labels += [lab] * len(cells)
        X += cells
    ad.AnnData(X=sp.csr_matrix(np.array(X, dtype=np.float32)), obs=pd.DataFrame({"target_gene": labels},
               index=[f"c{i}" for i in range(len(labels))]), var=pd.DataFrame(index=genes)).write_h5ad(path)


def test_builtin_table():
    assert [m.name for m in metrics(in_avg_score=True)] == ["DES", "PDS", "MAE"]
    assert METRICS["cells:MAE"].column == "mae" and METRICS["cells:MAE"].best == 0.0 and not METRICS["cells:MAE"].higher_is_better
    assert [m.name for m in metrics(in_cell_eval=False)] == ["variance_ratio", "edistance", "energy_distance",
                                                             "pearson_delta", "spearman_delta", "precision50_delta"]


@pytest.fixture
def toy_metric():
    def pred_sum(ctx):  # per perturbation: the sum of the predicted pseudobulk
        g = ctx.pred.groups()
        return {p: float(ctx.pred.X[g[p]].mean(0).sum()) for p in ctx.perturbations}

    m = register_metric(Metric("toy", "toy_sum", 0.0, False, "toy: predicted pseudobulk sum", pred_sum,
                               in_cell_eval=False))
    yield m
    unregister_metric("toy")


def test_a_metric_is_one_entry(tmp_path, toy_metric):
    genes = ["A", "B", "C"]
    real = {"non-targeting": [[1, 1, 1], [1, 2, 1]], "A": [[0, 1, 1], [0, 2, 1]], "B": [[1, 3, 1], [2, 3, 1]]}
    pred = {"non-targeting": [[1, 1, 1], [1, 2, 1]], "A": [[0, 1, 1], [0, 1, 1]], "B": [[1, 3, 1], [1, 5, 1]]}
    _write(tmp_path / "truth.h5ad", real, genes)
    _write(tmp_path / "pred.h5ad", pred, genes)
    table, agg = score_local(tmp_path / "pred.h5ad", tmp_path / "truth.h5ad")
    assert list(table.columns) == ["perturbation", "overlap_at_N", "discrimination_score_l1", "mae",
                                   "variance_ratio", "edistance", "energy_distance", "pearson_delta",
                                   "spearman_delta", "precision_at_50_delta", "toy_sum"]
    # the effect metrics by hand: B's real effect (pseudobulk - control) [0.5, 1.5, 0], predicted [0, 2.5, 0]
    eff_real, eff_pred = np.array([0.5, 1.5, 0.0]), np.array([0.0, 2.5, 0.0])
    row = table.set_index("perturbation").loc["B"]
    assert row["pearson_delta"] == pytest.approx(np.corrcoef(eff_real, eff_pred)[0, 1])
    assert row["precision_at_50_delta"] == pytest.approx(1.0)  # k capped at the 3 genes: same sets
    assert table.set_index("perturbation")["toy_sum"].to_dict() == {"A": 2.0, "B": 6.0}
    assert agg["toy_sum"] == 4.0 and agg["mae"] == pytest.approx(np.mean([0.5 / 3, 1.5 / 3]))
    # the leaderboard takes it from local_metrics.json, with the legend
    write_json({"raw": {"DES": 0.5, "PDS": 1.0, "MAE": 0.33}, "scaled": {"DES": 0.1, "PDS": 0.2, "MAE": 0.3},
                "avg_score": 0.2}, tmp_path / "score.json")
    write_json({"wall_s": 1.5, "device": "cpu"}, tmp_path / "train_log.json")
    write_json({"mean": agg}, tmp_path / "local_metrics.json")
    board = leaderboard({"m": tmp_path / "score.json"}, {"m": tmp_path / "train_log.json"},
                        {"m": tmp_path / "local_metrics.json"})
    assert "toy" in leaderboard_columns() and board.loc[0, "toy"] == 4.0
    assert board.loc[0, "variance_ratio"] == pytest.approx(agg["variance_ratio"])
    assert "toy = toy_sum (toy: predicted pseudobulk sum)" in to_markdown(board, title="t")


def test_a_spatial_or_signature_metric_is_one_entry_too(tmp_path):
    """Each task's scorer runs its task's entries: one register_metric call adds a column to the spatial per-gene
    metrics and to the signature table, and never to the cells task."""
    from pertpipe.evaluation.signatures import score_signature_files
    from pertpipe.spatial.evaluate import gene_metrics, spatial_metric_names

    register_metric(Metric("toy_max", "toy_max", 0.0, False, "toy: largest prediction", lambda ctx: ctx.per_gene(
        lambda p, t: float(np.max(p))), in_cell_eval=False, aggregate=np.median, task="spatial"))
    register_metric(Metric("toy_first", "toy_first", 0.0, False, "toy: first predicted value",
                           lambda ctx: {k: float(v[0]) for k, v in zip(ctx.keys, ctx.pred)}, in_cell_eval=False,
                           task="signatures"))
    try:
        assert gene_metrics(np.array([1.0, 3.0, 2.0]), np.array([1.0, 2.0, 3.0]))["toy_max"] == 3.0
        assert "toy_max" in spatial_metric_names() and "toy_max" not in [m.name for m in metrics()]
        obs = {"target_gene": ["A", "B"], "cell_type": ["x", "x"]}
        for name, rows in (("truth", [[1.0, 0.0, 2.0], [0.0, 1.0, 0.5]]), ("pred", [[4.0, 0.0, 2.0], [7.0, 1.0, 0.5]])):
            a = ad.AnnData(np.array(rows, dtype=np.float32), obs=pd.DataFrame(obs, index=["c0", "c1"]),
                           var=pd.DataFrame(index=["g1", "g2", "g3"]))
            a.write_h5ad(tmp_path / f"{name}.h5ad")
        table, summary = score_signature_files(tmp_path / "truth.h5ad", tmp_path / "pred.h5ad")
        assert table["toy_first"].tolist() == [4.0, 7.0] and summary["toy_first"] == 5.5
        assert table["pearson"].iloc[0] == pytest.approx(np.corrcoef([1, 0, 2], [4, 0, 2])[0, 1])
    finally:
        unregister_metric("toy_max", task="spatial")
        unregister_metric("toy_first", task="signatures")
