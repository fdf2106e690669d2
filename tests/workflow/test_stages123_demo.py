"""Stages 1-3 on the tiny demo through the real Snakemake CLI and the real cell-eval."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DEMO, browse, read_report, run_snakemake

pytestmark = pytest.mark.workflow

CFG = {"dataset": "demo", "demo": TINY_DEMO, "evaluation": {"profile": "both"},  # the default: VCC 2025 and 2026
       "stage1": {"chunk_size": 500}, "models": ["control", "cell_mean", "linear"]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("s123")
    proc = run_snakemake(wd, CFG, "all", timeout=1200)
    (wd / "snakemake.out").write_text(proc.stdout + proc.stderr)
    return wd / "results" / "demo"


def test_the_run_ends_with_one_summary_line(full_run):
    """The last thing a run prints: its time, the top row and its standing, the best model of ours, the report."""
    out = (full_run.parent.parent / "snakemake.out").read_text()
    line = next(x for x in out.splitlines() if x.startswith("pertpipe: demo finished in "))
    assert "top row " in line and "strongest baseline" in line and line.endswith("report: results/demo/report.html")
    board = pd.read_csv(full_run / "leaderboard.csv")
    assert f"top row {board.loc[0, 'model']}" in line


def test_vcc_archive(full_run, tmp_path):
    vcc = full_run / "stage3/linear/linear.vcc"
    with tarfile.open(vcc) as tf:
        assert sorted(tf.getnames()) == ["pred.h5ad.zst", "watermark.txt"]
        assert tf.extractfile("watermark.txt").read() == b"vcc-prep"
        tf.extract("pred.h5ad.zst", tmp_path, filter="data")
    subprocess.run(["zstd", "-d", "-q", str(tmp_path / "pred.h5ad.zst")], check=True)
    packed = ad.read_h5ad(tmp_path / "pred.h5ad")
    pred = ad.read_h5ad(full_run / "stage2/linear/predictions.h5ad")
    assert packed.shape == pred.shape and list(packed.var_names) == list(pred.var_names)
    np.testing.assert_allclose(packed.X.toarray(), np.asarray(pred.X), rtol=1e-6)  # prep stores CSR; we store dense


def test_predictions_follow_the_contract_and_template(full_run):
    tpl = pd.read_csv(full_run / "stage1/template.csv")
    genes = (full_run / "stage1/genes.txt").read_text().split()
    for m in ("control", "cell_mean", "linear"):
        p = ad.read_h5ad(full_run / f"stage2/{m}/predictions.h5ad")
        assert list(p.var_names) == genes and p.X.dtype == np.float32 and p.X.min() >= 0
        got = p.obs.groupby("target_gene").size().to_dict()
        assert got == tpl.groupby("target_gene")["n_cells"].sum().to_dict()
        log = json.loads((full_run / f"stage2/{m}/train_log.json").read_text())
        assert {"wall_s", "device", "seed", "versions"} <= set(log)


def test_scores_baseline_and_linear_beats_control(full_run):
    s = {m: json.loads((full_run / f"stage3/{m}/score.json").read_text()) for m in ("control", "cell_mean", "linear")}
    for v in s.values():
        assert set(v["raw"]) == set(v["scaled"]) == {"DES", "PDS", "MAE"}
        assert v["versions"]["cell-eval"] == "0.8.2" and v["versions"]["pdex"] == "0.3.0"
        assert 0 <= v["avg_score"] <= 1
    # the baseline is cell_mean's own prediction (same seed, same control draws): it scores exactly 0
    assert s["cell_mean"]["raw"] == s["cell_mean"]["baseline_raw"] and s["cell_mean"]["avg_score"] == 0.0
    assert s["linear"]["raw"]["MAE"] < s["cell_mean"]["raw"]["MAE"] < s["control"]["raw"]["MAE"]
    board = pd.read_csv(full_run / "leaderboard.csv")
    assert set(board["model"]) == {"control", "cell_mean", "linear"}
    assert list(board["avg_score"]) == sorted(board["avg_score"], reverse=True)
    md = (full_run / "leaderboard.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert head.count("|") - 1 <= 10, head  # the verdict table: at most 10 columns
    assert head.startswith("| model | standing | Δ vs strongest baseline [95 % CI] | avg_score | vcc2026_avg_score")
    assert "| cell_mean (baseline) |" in md and "<details><summary>All metrics" in md
    assert set(board.columns) >= {"DES_scaled", "variance_ratio", "baseline", "delta", "ci_low", "standing"}


def test_batch_scoring_equals_the_scorers_command_lines_row_by_row(full_run, tmp_path):
    """The rows were scored in batches (one cell-eval / cell-eval2 process a batch): the real command lines, run on
    one row at a time as before, give the same numbers (max |Δ| <= 1e-12)."""
    import os
    import sys

    from pertpipe.evaluation import vcc2026

    bin_dir = os.path.dirname(sys.executable)
    truth = full_run / "stage1/truth.h5ad"
    for m in ("control", "linear"):
        out = tmp_path / m
        subprocess.run([f"{bin_dir}/cell-eval", "run", "-ap", str(full_run / f"stage2/{m}/predictions.h5ad"), "-ar",
                        str(truth), "-o", str(out), "--profile", "vcc", "--num-threads", "1", "--control-pert",
                        "non-targeting", "--pert-col", "target_gene"], check=True, capture_output=True)
        for name in ("results.csv", "agg_results.csv"):
            a = pd.read_csv(out / name)
            b = pd.read_csv(full_run / f"stage3/{m}/{name}")
            num = a.select_dtypes("number").columns
            assert list(a.columns) == list(b.columns) and (a.drop(columns=num) == b.drop(columns=num)).all().all()
            assert np.nanmax(np.abs(a[num].to_numpy() - b[num].to_numpy())) <= 1e-12, (m, name)
        subprocess.run([f"{bin_dir}/cell-eval", "score", "-i", str(out / "agg_results.csv"), "-I",
                        str(full_run / "stage3/cell_mean/agg_results.csv"), "-o", str(out / "score.csv")], check=True,
                       capture_output=True)
        cli = pd.read_csv(out / "score.csv").set_index("metric")["from_baseline"]
        ours = json.loads((full_run / f"stage3/{m}/score.json").read_text())
        assert abs(cli["avg_score"] - ours["avg_score"]) <= 1e-12
        assert max(abs(cli[c] - ours["scaled"][k]) for k, c in (("DES", "overlap_at_N"), ("PDS",
                   "discrimination_score_l1"), ("MAE", "mae"))) <= 1e-12
    # cell-eval2's vcc2026 run + score of one row, as the command line does it
    files = full_run / "stage3/_vcc2026/files"
    vcc2026.to_counts(full_run / "stage2/linear/predictions.h5ad", full_run / "stage1/train.h5ad",
                      tmp_path / "counts.h5ad", seed=0, chunk_size=500)
    common = ["--preset", "vcc2026", "--pert-col", "target_gene", "--control", "non-targeting"]
    subprocess.run([f"{bin_dir}/cell-eval2", "run", "-ap", str(tmp_path / "counts.h5ad"), "-ar",
                    str(files / "real_counts.h5ad"), "-o", str(tmp_path / "r26"), *common], check=True,
                   capture_output=True)
    subprocess.run([f"{bin_dir}/cell-eval2", "score", "--user-agg", str(tmp_path / "r26/agg_results.csv"),
                    "--user-meta", str(tmp_path / "r26/run_meta.json"), "--real-bundle", str(files / "bundle"), "-o",
                    str(tmp_path / "s26.csv")], check=True, capture_output=True)
    cli = pd.read_csv(tmp_path / "s26.csv").set_index("metric")
    ours = json.loads((full_run / "stage3/linear/vcc2026.json").read_text())
    assert abs(cli.loc["avg_score", "from_replicate"] - ours["avg_score"]) <= 1e-12
    for k, v in ours["metrics"].items():
        assert abs(cli.loc[k, "from_replicate"] - v["from_replicate"]) <= 1e-12, k


def test_local_scorer_agrees_with_cell_eval(full_run):
    for m in ("control", "cell_mean", "linear"):
        c = json.loads((full_run / f"stage3/{m}/consistency.json").read_text())["metrics"]
        assert c["MAE"]["max_abs_diff"] < 1e-6 and c["PDS"]["max_abs_diff"] < 1e-6
        assert c["DES"]["max_abs_diff"] <= 0.02


def test_local_run_engine_through_snakemake(full_run, tmp_path):
    """evaluation.run_engine: local re-runs cell-eval run's rules with the local engine (a params change), and
    cell-eval score scores its files: the same scores as cell-eval's run within DES's tolerance."""
    wd = tmp_path / "wd"
    shutil.copytree(full_run.parent.parent, wd, symlinks=True)
    run_snakemake(wd, {**CFG, "evaluation": {"run_engine": "local", "profile": "vcc2025"}, "stage1": {"chunk_size": 97}},
                  "results/demo/stage3/linear/score.json", "results/demo/stage3/linear/consistency.json",
                  "results/demo/stage3/cell_mean/score.json")
    res = wd / "results" / "demo" / "stage3"
    for run_json in (res / "linear/run.json", res / "cell_mean/run.json"):  # cell_mean's row is the baseline
        assert json.loads(run_json.read_text())["engine"] == "local"
    assert json.loads((full_run / "stage3/linear/run.json").read_text())["engine"] == "cell-eval"
    cons = json.loads((res / "linear/consistency.json").read_text())
    assert cons["engine"] == "local" and cons["metrics"] == {}
    before = json.loads((full_run / "stage3/linear/score.json").read_text())
    after = json.loads((res / "linear/score.json").read_text())
    for k in ("MAE", "PDS"):
        assert after["raw"][k] == pytest.approx(before["raw"][k], abs=1e-6)
    assert after["raw"]["DES"] == pytest.approx(before["raw"]["DES"], abs=0.02)
    assert after["avg_score"] == pytest.approx(before["avg_score"], abs=0.02)
    # local engine, baseline and predictions written 97 rows at a time: cell_mean is still exactly the baseline
    cm = json.loads((res / "cell_mean/score.json").read_text())
    assert cm["raw"] == cm["baseline_raw"] and cm["avg_score"] == 0.0
    real_de = pd.read_csv(res / "linear/real_de.csv")
    assert list(real_de.columns) == list(pd.read_csv(full_run / "stage3/linear/real_de.csv").columns)


def test_vcc2026_scores_on_counts(full_run, tmp_path):
    """profile both (the default): cell-eval2's vcc2026 preset scores every row on counts; its scale runs from the
    truth's generic-response baseline (0) to the truth's split-half replicate (1), and the replicate scores 1 on it."""
    from pertpipe.evaluation import vcc2026

    board = pd.read_csv(full_run / "leaderboard.csv").set_index("model")
    six = [c for c in board.columns if c.startswith("vcc2026_") and c.endswith("_scaled")]
    assert len(six) == 6 and board["vcc2026_avg_score"].notna().all()
    assert board.loc["cell_mean", "vcc2026_avg_score"] == pytest.approx(board.loc["cell_mean", six].mean())
    res = json.loads((full_run / "stage3/linear/vcc2026.json").read_text())
    assert res["versions"]["cell-eval2"] == "0.20.0" and res["counts"]["cells"] > 0
    real = ad.read_h5ad(full_run / "stage3/_vcc2026/files/real_counts.h5ad")  # the truth side: raw counts
    assert real.n_obs == ad.read_h5ad(full_run / "stage1/truth.h5ad", backed="r").n_obs
    assert np.array_equal(real.X.data, np.rint(real.X.data))
    # the split-half replicate (the bundle's anchor), scored as a run's aggregate, is exactly the 1 end
    files = full_run / "stage3/_vcc2026/files"
    agg = pd.read_csv(full_run / "stage3/cell_mean/vcc2026_agg.csv")
    anchor = vcc2026.anchor_values(files / "bundle")
    mean_row = agg.index[agg["statistic"] == "mean"][0]
    for m, v in anchor.items():
        if m in agg.columns:
            agg.loc[mean_row, m] = v
    agg.to_csv(tmp_path / "agg.csv", index=False)
    ceiling = vcc2026.score_agg(tmp_path / "agg.csv", full_run / "stage3/cell_mean/vcc2026_run_meta.json",
                                files / "bundle")
    assert ceiling["avg_score"] == pytest.approx(1.0) and len(ceiling["metrics"]) == 6
    assert all(v["from_replicate"] == pytest.approx(1.0) for v in ceiling["metrics"].values())


def test_vcc2026_profile_through_the_cli(full_run, tmp_path):
    """`--config evaluation='{"profile": "vcc2026"}'`: the 2026 scores are required (the bundle step may not skip)."""
    wd = tmp_path / "wd"
    shutil.copytree(full_run.parent.parent, wd, symlinks=True)
    run_snakemake(wd, CFG, "results/demo/stage3/linear/vcc2026.json",
                  extra=("--config", 'evaluation={"profile": "vcc2026"}'))
    res = json.loads((wd / "results/demo/stage3/linear/vcc2026.json").read_text())
    assert "skipped" not in res and res["profile"] == "vcc2026" and len(res["metrics"]) == 6
    info = json.loads((wd / "results/demo/stage3/_vcc2026/bundle.json").read_text())
    assert set(info["replicate_ceiling"]) >= set(res["metrics"])


def test_report_is_self_contained(full_run):
    html, imgs, links = read_report(full_run / "report.html")
    assert len(imgs) >= 2 and "<h1>pertpipe report: demo (Perturbation response (cells))</h1>" in html
    assert {"leaderboard.csv", "stage1/stage1_report.txt", "stage2/linear/train_log.json",
            "stage3/linear/score.json"} <= set(links)
    sizes, console, layout = browse(full_run / "report.html", width=1280)  # a real headless Chromium
    assert len(sizes) == len(imgs) and all(w > 0 and h > 0 for w, h in sizes) and console == []
    # at 1,280 px the page does not scroll sideways and the leaderboard table fits (the wide table is collapsed)
    assert layout["scroll"] <= layout["viewport"] and layout["table_right"] <= layout["viewport"], layout
    assert "<summary>All metrics" in html and "Δ vs strongest baseline [95 % CI]" in html
    for words in ("Leaderboard", "Predicted vs true change", "Local scorer vs cell-eval", "Stage 1", "linear"):
        assert words in html
    assert "http://" not in html and "https://" not in html


def test_snakemake_report_collects_the_outputs(full_run):
    import zipfile

    wd = full_run.parent.parent
    out = wd / "report.zip"
    run_snakemake(wd, CFG, extra=("--report", str(out)))
    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("report.html") for n in names)
    assert any(n.endswith("leaderboard.csv") for n in names)
    assert any(n.endswith("stage1_report.txt") for n in names)
