"""The local run engine writes what `cell-eval run --profile vcc` writes (results, agg_results, pdex DE tables)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertpipe.errors import PertpipeError
from pertpipe.evaluation import celleval

GENES = [f"G{i}" for i in range(40)]
FLOAT32_COLUMNS = {"target_mean", "ref_mean", "log2_fold_change", "percent_change"}


def _pair(tmp_path):
    """Truth (CSR-like log1p counts) and predictions (dense) with 5 perturbations of graded strength."""
    paths = {}
    for name, seed in (("real", 0), ("pred", 1)):
        rng = np.random.default_rng(seed)
        labels = ["non-targeting"] * 60 + [g for g in GENES[:5] for _ in range(30)]
        X = np.log1p(rng.poisson(1.0, size=(len(labels), len(GENES)))).astype(np.float32)
        for i, lab in enumerate(labels):
            if lab != "non-targeting":
                k = GENES.index(lab)
                X[i, k] = 0.0  # knocked-down target: -inf log2FC, as pdex reports it
                X[i, 10:14] += (k + 1) * 0.5 * (seed + 1)
        obs = pd.DataFrame({"target_gene": labels}, index=[f"c{i}" for i in range(len(labels))])
        paths[name] = tmp_path / f"{name}.h5ad"
        ad.AnnData(X, obs=obs, var=pd.DataFrame(index=GENES)).write_h5ad(paths[name])
    return paths["pred"], paths["real"]


def test_local_engine_writes_cell_evals_files(tmp_path):
    pred, real = _pair(tmp_path)
    ce = celleval.run(pred, real, tmp_path / "cell-eval", engine="cell-eval")
    lo = celleval.run(pred, real, tmp_path / "local", engine="local")
    assert ce["engine"] == "cell-eval" and lo["engine"] == "local" and lo["pred_entries"] == 210 * 40
    for name in celleval.RUN_FILES:
        a, b = pd.read_csv(ce["files"][name]), pd.read_csv(lo["files"][name])
        assert list(a.columns) == list(b.columns) and a.shape == b.shape, name
        for col in a.columns:
            if a[col].dtype.kind in "fi":
                x, y = a[col].to_numpy(float), b[col].to_numpy(float)
                assert np.array_equal(np.isinf(x), np.isinf(y)), (name, col)
                fin = np.isfinite(x)
                # pdex keeps pseudobulks (and so log2FC, percent change) in float32; U, p-values, FDR and the
                # three metrics agree to round-off
                tol = (1e-4, 1e-5) if col in FLOAT32_COLUMNS else (1e-7, 1e-7)
                np.testing.assert_allclose(y[fin], x[fin], rtol=tol[0], atol=tol[1], err_msg=f"{name}:{col}")
            else:
                assert (a[col].astype(str) == b[col].astype(str)).all(), (name, col)
    res = pd.read_csv(lo["files"]["results.csv"])
    assert res["perturbation"].tolist() == GENES[:5]
    de = pd.read_csv(lo["files"]["real_de.csv"])
    assert len(de) == 5 * 40 and de.loc[0, ["target", "feature"]].tolist() == ["G0", "G0"]
    assert de.loc[0, "log2_fold_change"] == -np.inf and de["ref_membership"].eq(60).all()


def test_auto_engine_switches_on_size_and_local_needs_the_vcc_profile(tmp_path):
    pred, real = _pair(tmp_path)
    small = celleval.run(pred, real, tmp_path / "a", engine="auto", local_above_entries=8400)
    big = celleval.run(pred, real, tmp_path / "b", engine="auto", local_above_entries=8399)
    assert (small["engine"], big["engine"]) == ("cell-eval", "local")
    assert celleval.run(pred, real, tmp_path / "c", engine="auto", profile="minimal",
                        local_above_entries=0)["engine"] == "cell-eval"  # auto never runs local on another profile
    with pytest.raises(PertpipeError, match="computes the vcc profile's metrics only.*evaluation.profile is 'full'"):
        celleval.run(pred, real, tmp_path / "d", engine="local", profile="full")
    with pytest.raises(PertpipeError, match="evaluation.run_engine 'fast': use one of"):
        celleval.run(pred, real, tmp_path / "e", engine="fast")
    assert not (tmp_path / "d" / "results.csv").exists()


def _cell_eval_children(pid: int) -> list:
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    def scorer(p) -> bool:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return False
        # a fork not yet exec'd (an import running a helper) still shows the parent's `python -c ...` line
        return cmd[1:2] != ["-c"] and ("cell-eval" in " ".join(cmd) or "cell_eval" in " ".join(cmd))

    return [p for p in procs if scorer(p)]


def test_a_killed_cell_eval_is_explained_and_leaves_no_folder(tmp_path):
    """cell-eval SIGKILLed mid-run (what the OOM killer does): the error says so, not cell-eval's last words, and
    the work folder in the output directory is gone."""
    import os
    import signal
    import threading
    import time

    pred, real = _pair(tmp_path)
    out = tmp_path / "run"

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline:
            kids = _cell_eval_children(os.getpid())
            if kids:
                time.sleep(0.5)
                for k in kids:
                    k.send_signal(signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    with pytest.raises(celleval.CellEvalError) as err:
        celleval.run(pred, real, out, engine="cell-eval")
    t.join()
    assert "cell-eval run was killed (-9: SIGKILL): perhaps out of memory" in str(err.value)
    assert list(out.iterdir()) == []


def test_a_killed_job_takes_cell_eval_along_and_its_folder_is_cleaned_next_time(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    pred, real = _pair(tmp_path)
    out = tmp_path / "run"
    code = ("import sys; from pertpipe.evaluation import celleval; "
            "celleval.run(sys.argv[1], sys.argv[2], sys.argv[3], engine='cell-eval')")
    job = subprocess.Popen([sys.executable, "-c", code, str(pred), str(real), str(out)],
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline, kids = time.time() + 60, []
    while time.time() < deadline and not kids:
        kids = _cell_eval_children(job.pid)
        time.sleep(0.05)
    assert kids, "cell-eval never started"
    os.kill(job.pid, signal.SIGKILL)  # the scheduler kills the job's process, not its group
    job.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(k.is_running() and k.status() != "zombie" for k in kids):
        time.sleep(0.1)
    assert not any(k.is_running() and k.status() != "zombie" for k in kids), "cell-eval outlived its job"
    stale = [p.name for p in out.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(f".pertpipe-tmp-{job.pid}-")
    celleval.run(pred, real, out, engine="local")  # the next job in that folder
    assert sorted(p.name for p in out.iterdir()) == sorted(celleval.RUN_FILES)
