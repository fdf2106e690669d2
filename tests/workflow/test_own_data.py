"""Run on your own data: the README's three commands on a file the test writes, and bad-input runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, make_adata, run_snakemake

pytestmark = pytest.mark.workflow


def _screen(path, *, n=600):
    """A raw-count screen in a user's own conventions: `sgRNA_target` with `NTC`, `lane`, one cell line."""
    targets = tuple(f"GENE{i}" for i in range(2, 12))
    a = make_adata(n_cells=n, n_genes=40, pert_col="sgRNA_target", control="NTC", targets=targets, cell_types=("K562",))
    x = a.X.toarray()
    for i, t in enumerate(a.obs["sgRNA_target"]):  # knockdown of the own gene so that there is signal
        if t != "NTC":
            x[i, int(t[4:]) - 1] = 0
    a.X = type(a.X)(x)
    a.obs = a.obs.rename(columns={"cell_type": "cell_line", "batch": "lane"})
    a.obs.loc[a.obs.index[:7], "sgRNA_target"] = "unassigned"
    a.write_h5ad(path)


def test_readme_three_commands_from_raw_h5ad_to_leaderboard(tmp_path):
    _screen(tmp_path / "my_screen.h5ad")
    env_py = [sys.executable, "-m"]
    # 1. pertpipe inspect (README: `pertpipe inspect my_screen.h5ad --write-config my_screen.yaml`)
    proc = subprocess.run([*env_py, "pertpipe", "inspect", "my_screen.h5ad", "--write-config", "my_screen.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "sgRNA_target" in proc.stdout and "perturbation?" in proc.stdout
    cfg = yaml.safe_load((tmp_path / "my_screen.yaml").read_text())
    assert cfg["dataset"] == "my_screen" and cfg["datasets"]["my_screen"]["adapter_options"] == {
        "pert_col": "sgRNA_target", "control_values": ["NTC"], "cell_type_col": "cell_line", "batch_col": "lane"}
    # 2. snakemake with that config (baselines only here: the deep models are run by test_sparse_regime)
    # (cell-eval's scoring only: cell-eval2's vcc2026 scoring is tested in test_stages123_demo)
    run_snakemake(tmp_path, None, extra=("--configfile", "my_screen.yaml", "--config",
                                         "models=[control,cell_mean,linear]", 'evaluation={"profile": "vcc2025"}'))
    # 3. the leaderboard
    res = tmp_path / "results" / "my_screen"
    board = pd.read_csv(res / "leaderboard.csv")
    assert set(board["model"]) == {"control", "cell_mean", "linear"}
    rep = (res / "stage1" / "stage1_report.txt").read_text()
    assert "note: the universe is the source's own genes" in rep
    assert "cells dropped for their label (unassigned" in rep
    import json

    s1 = json.loads((res / "stage1" / "stage1_report.json").read_text())
    assert s1["standardize"]["excluded_cells"] == 7 and s1["alignment"]["universe_size"] == 40
    assert s1["standardize"]["source"].endswith("my_screen.h5ad")


def test_bare_path_as_dataset_and_small_targets_reported(tmp_path):
    a = make_adata(n_cells=400, n_genes=20, targets=tuple(f"GENE{i}" for i in range(2, 10)), cell_types=("x",))
    keep = np.ones(a.n_obs, bool)
    keep[np.flatnonzero(a.obs["target_gene"] == "GENE9")[3:]] = False  # GENE9: 3 cells only
    a[keep].copy().write_h5ad(tmp_path / "plain.h5ad")
    cfg = {"dataset": str(tmp_path / "plain.h5ad"), "models": ["cell_mean"],
           "stage1": {"split": {"strategy": "random_unseen", "fraction": 0.9, "min_cells_per_target": 10}}}
    run_snakemake(tmp_path, cfg, "stage1")
    rep = (tmp_path / "results/plain/stage1/stage1_report.txt").read_text()
    assert "note: a local dataset with no universe: the universe is the source's own genes" in rep
    assert "DROPPED from validation (fewer than 10 cells, too few for a DE test): 1: GENE9 (3)" in rep


@pytest.mark.parametrize("case", ["missing_path", "control_label"])
def test_bad_user_dataset_stops_with_a_message(tmp_path, case):
    make_adata(pert_col="guide", control="CTRL").write_h5ad(tmp_path / "f.h5ad")
    path = tmp_path / ("absent.h5ad" if case == "missing_path" else "f.h5ad")
    cfg = {"dataset": "mine", "models": ["cell_mean"],
           "datasets": {"mine": {"path": str(path), "adapter_options": {"pert_col": "guide", "control_values": ["NTC"]}}}}
    proc = run_snakemake(tmp_path, cfg, "stage1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    if case == "missing_path":
        assert "datasets.mine.path" in out and "absent.h5ad does not exist" in out
    else:
        log = (tmp_path / "results/mine/logs/standardize.log").read_text()
        assert "no control cells" in log and "control_values" in log and "f.h5ad" in log
        assert not (tmp_path / "results/mine/stage1/standardized.h5ad").exists()


def test_a_url_with_credentials_never_leaves_them_behind(tmp_path, file_server):
    """A user's dataset at http://user:password@host/...?api_key=...: downloaded through the real Snakemake from a
    loopback server, then stage 1. Neither the password nor the key is in any log, Snakemake's output, the lock file
    or the provenance of the h5ad files; a failing URL's message names it without them."""
    import h5py

    _screen(tmp_path / "src.h5ad")
    file_server.files["/data/screen.h5ad"] = (tmp_path / "src.h5ad").read_bytes()
    password, key = "pa55-w0rd-xyz", "k3y-abcdef-123456"
    url = file_server.url("data/screen.h5ad").replace("http://", f"http://alice:{password}@") + f"?api_key={key}"
    opts = {"pert_col": "sgRNA_target", "control_values": ["NTC"], "cell_type_col": "cell_line", "batch_col": "lane"}
    cfg = {"dataset": "mine", "datasets": {"mine": {"url": url, "adapter_options": opts}},
           "stage1": {"universe": {"kind": "source"}, "split": {"min_cells_per_target": 5}}}
    proc = run_snakemake(tmp_path, cfg, "stage1")
    texts = [proc.stdout, proc.stderr]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*.log")]
    texts += [p.read_text() for p in tmp_path.rglob("*.json")]
    for h5 in (tmp_path / "results/mine/stage1").glob("*.h5ad"):
        with h5py.File(h5, "r") as f:
            src = f["uns/pertpipe/source/url"][()] if "uns/pertpipe/source/url" in f else b""
            texts.append(src.decode() if isinstance(src, bytes) else str(src))
            assert not src or b"127.0.0.1" in (src if isinstance(src, bytes) else src.encode())
    lock = (tmp_path / "resources/datasets.lock.json")
    assert lock.exists() and "127.0.0.1" in lock.read_text()  # the origin is recorded, its credentials are not
    for t in texts:
        assert password not in t and key not in t
    # a URL that fails: the message names it, without the password or the key
    bad = url.replace("screen.h5ad", "gone.h5ad")
    cfg["datasets"]["gone"] = {"url": bad, "adapter_options": opts}
    proc = run_snakemake(tmp_path, {**cfg, "dataset": "gone"}, "stage1", check=False)
    out = proc.stdout + proc.stderr + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert proc.returncode != 0 and "404" in out and "gone.h5ad" in out
    assert password not in out and key not in out
