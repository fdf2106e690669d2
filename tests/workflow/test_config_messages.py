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
