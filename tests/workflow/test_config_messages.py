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
