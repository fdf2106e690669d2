"""A user's config mistakes stop Snakemake at once with one line naming the key, the value and the fix (the real
CLI, dry run): a typo'd key, an empty model list, a name that could leave results/, numbers nested in --config."""

from __future__ import annotations

import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.workflow

CASES = [
    ("modls=[linear]", "config: unknown key 'modls'. Fix: did you mean 'models'?"),
    ("models=[]", "config models is empty: nothing would be trained or scored. Fix: list at least one model"),
    ("models=[../../x]", "config models.0: '../../x' is not a safe name (it becomes a folder name under results/)"),
    ("models=[..]", "config models.0: '..' is not a safe name (it becomes a folder name under results/). Fix: start "
                    "with a letter or digit"),
    ("models=[_baseline]", "config models.0: '_baseline' is not a safe name"),
    ("stage1={chunk_size: 500}", "config stage1.chunk_size is the text '500', not an integer: values nested in "
                                 "--config arrive as strings. Fix: put it in a YAML file and pass --configfile"),
    ("model_params={linear: {rank: 5}}", "model_params.linear.rank is the text '5' (values nested in --config arrive "
                                         "as strings). Fix: use an integer in a YAML file passed with --configfile"),
]


@pytest.mark.parametrize("setting,message", CASES)
def test_a_config_mistake_is_one_line(tmp_path, setting, message):
    proc = run_snakemake(tmp_path, None, extra=("-n", "--config", setting), check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out
    assert len(out.splitlines()) < 15  # not the whole schema (it was 1,184 lines for a typo)
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was overwritten


def test_an_alias_that_escapes_results_is_refused(tmp_path):
    proc = run_snakemake(tmp_path, {"models": ["cell_mean"], "model_params": {"../evil": {"model": "linear"}}},
                         extra=("-n",), check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config model_params: '../evil' is not a safe name" in out


@pytest.mark.parametrize("cfg,message", [
    ({"dataset": "..", "datasets": {"..": {"path": "x.h5ad"}}}, "config datasets: '..' is not a safe name"),
    ({"models": ["cell_mean", "up"], "model_params": {"up": {"model": "linear"}, "..": {"model": "linear"}}},
     "config model_params: '..' is not a safe name"),
    ({"spatial_datasets": {".": {"adapter": "h5ad_pair", "species": "human",
                                 "inputs": {"spatial": "a.h5ad", "scrna": "b.h5ad"}}}},
     "config spatial_datasets: '.' is not a safe name"),
    ({"models": ["cell_mean", "dygenept", "dygenept_raw"], "model_params": {"dygenept_raw": {"model": "cell_mean"}}},
     "config models: 'dygenept_raw' is the name of the raw (λ = 1) row the pipeline scores for the shrunk model "
     "'dygenept'"),
])
def test_names_that_leave_their_folder_or_clash_with_generated_rows_are_refused(tmp_path, cfg, message):
    """A dataset named '..' wrote stage1/ and logs/ into the repository root, an alias '..' wrote results/demo/model.pt,
    '_baseline' clashed with the baseline's rule, and an alias 'dygenept_raw' trained cell_mean but its row was
    predicted from dygenept's model.pt: each is now refused in one line, before anything runs."""
    proc = run_snakemake(tmp_path, cfg, extra=("-n",), check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-2000:]
    assert len(out.splitlines()) < 15 and not (tmp_path / "results").exists() and not (tmp_path / "stage1").exists()


def test_a_file_where_a_results_folder_belongs_is_one_line(tmp_path):
    """`--forcerun train_linear` with a file where stage2/linear/ belongs ended in a 110-line traceback inside
    Snakemake's output removal: the run now stops before any job, in one line naming the path and the fix."""
    (tmp_path / "results/demo/stage2").mkdir(parents=True)
    (tmp_path / "results/demo/stage2/linear").write_text("not a folder")
    proc = run_snakemake(tmp_path, {"models": ["cell_mean", "linear"]}, extra=("--forcerun", "train_linear"),
                         check=False, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "results/demo/stage2/linear is a file, but the run writes into a folder" in out
    assert "Traceback" not in out and len(out.splitlines()) < 15
    assert (tmp_path / "results/demo/stage2/linear").read_text() == "not a folder"  # nothing lost


def test_two_runs_on_one_results_folder_do_not_write_it_at_once(tmp_path):
    """Two checkouts pointing `results:` at one folder were not locked against each other (Snakemake locks its
    working directory only): while one run holds the folder, a second stops before any job, naming the first."""
    from pertpipe.io import hold_results_lock

    shared = tmp_path / "shared_results"
    other = hold_results_lock(shared, "demo", who="snakemake in /elsewhere/pertpipe")
    try:
        proc = run_snakemake(tmp_path / "wd", {"models": ["cell_mean"], "results": str(shared)}, "stage1",
                             check=False, timeout=300)
    finally:
        other.close()
    out = proc.stdout + proc.stderr
    # and a run holds it while it runs: a second run started meanwhile stops
    import subprocess
    import sys
    import time

    from conftest import REPO, write_config

    wd = tmp_path / "wd2"
    wd.mkdir()
    cfg = write_config(wd, {"models": ["cell_mean"], "results": str(tmp_path / "r2")})
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "stage1", "-s", str(REPO / "Snakefile"),
                              "--directory", str(wd), "--cores", "1", "--nolock", "--configfile", str(cfg)],
                             cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r2/demo").exists():
        time.sleep(0.2)
    second = run_snakemake(tmp_path / "wd3", {"models": ["cell_mean"], "results": str(tmp_path / "r2")}, "stage1",
                           check=False, timeout=300)
    assert first.wait(timeout=300) == 0
    assert second.returncode != 0 and "is writing this results folder now" in second.stdout + second.stderr
    assert proc.returncode != 0 and "(snakemake in /elsewhere/pertpipe) is writing this results folder now" in out
    assert not (shared / "demo").exists()  # no job ran
