"""The SLURM profile on a real single-node Slurm (started by .ci/slurm.sh): jobs really go through sbatch,
GPU requests reach the scheduler (one per data-parallel training process: DyGenePT trains with 2 processes under
torchrun inside its Slurm job), and the results equal a local run with the same config. Training and prediction go
through Slurm (stage 1 and the knowledge stage are made once, locally, and copied for the Slurm run: every job costs
the scheduler's round trip, and they are the same kind of rule with the same resource mapping)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO, TINY_DEMO, run_snakemake

from pertpipe.io import sha256_file

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

TINY_DYG = {"epochs": 3, "steps_per_epoch": 4, "groups_per_step": 4, "cells_per_group": 8, "hidden": 32,
            "latent_dim": 8, "attn_dim": 8, "gpu": True, "device": "auto"}


def _slurm_idle() -> str | None:
    if not shutil.which("sinfo"):
        return "sinfo not found (apt-get install slurm-wlm munge; bash .ci/slurm.sh start)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
    state = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    if proc.returncode != 0 or state not in ("idle", "mix", "alloc"):
        return f"no usable Slurm node (sinfo: {state or proc.stderr.strip()[:200]}); run: bash .ci/slurm.sh start"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    why = _slurm_idle()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm did not start in CI: {why}")
        pytest.skip(why)
    base = tmp_path_factory.mktemp("slurm")
    cfg = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
           "knowledge": {"cache_dir": str(base / "cache")}, "models": ["cell_mean", "dygenept"],
           "model_params": {"dygenept": TINY_DYG},
           "distributed": {"enabled": True, "nproc_per_node": 2, "models": ["dygenept"]}}
    env = {"HF_HUB_OFFLINE": "1"}
    run_snakemake(base / "local", cfg, "stage1", "knowledge", timeout=1200, env=env)
    # the Slurm run starts from a copy of these inputs (mtimes and Snakemake's records kept, so it re-makes none of
    # them); that the same config makes the same stage-1 files is test_stage1_demo's test_same_config_same_files
    shutil.copytree(base / "local", base / "slurm", symlinks=True)
    local = run_snakemake(base / "local", cfg, "stage2", timeout=1200, env=env)
    slurm = run_snakemake(base / "slurm", cfg, "stage2", extra=("--profile", str(REPO / "profiles/slurm")),
                          timeout=1500, env=env)
    return base, slurm, local


def _job_ids(rule_dir):
    return [m.group(1) for p in rule_dir.glob("**/*.log") if (m := re.search(r"(\d+)\.log$", p.name))]


def test_jobs_went_through_sbatch_with_gpu_requests(runs):
    base, slurm, _local = runs
    logs = base / "slurm/.snakemake/slurm_logs"
    for rule in ("train_cell_mean", "train_dygenept", "predict_cell_mean", "predict_dygenept"):
        assert _job_ids(logs / f"rule_{rule}"), f"no Slurm job log for {rule}"
    assert not (logs / "rule_split").exists()  # stage 1 was made before the Slurm run
    ctl = open("/var/log/slurm/slurmctld.log").read()
    train_dyg = _job_ids(logs / "rule_train_dygenept")[0]
    train_cm = _job_ids(logs / "rule_train_cell_mean")[0]
    assert f"JobId={train_dyg}" in ctl and f"JobId={train_cm}" in ctl
    show = subprocess.run(["scontrol", "show", "job", train_dyg], capture_output=True, text=True).stdout
    assert "TresPerJob=gres:gpu:2" in show  # the training rule asked Slurm for a GPU per process
    log = json.loads((base / "slurm/results/demo/stage2/dygenept/train_log.json").read_text())
    assert log["distributed"]["world_size"] == 2  # torchrun ran inside the Slurm job
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log["distributed"]["launcher"]
    show_cm = subprocess.run(["scontrol", "show", "job", train_cm], capture_output=True, text=True).stdout
    assert "gres:gpu" not in show_cm


def test_results_equal_a_local_run(runs):
    base, _s, _l = runs
    s, l = base / "slurm/results/demo", base / "local/results/demo"
    assert sha256_file(s / "stage2/cell_mean/predictions.h5ad") == sha256_file(l / "stage2/cell_mean/predictions.h5ad")
    import anndata as ad
    import numpy as np

    a, b = (ad.read_h5ad(d / "stage2/dygenept/predictions.h5ad") for d in (s, l))
    assert list(a.obs["target_gene"]) == list(b.obs["target_gene"]) and list(a.var_names) == list(b.var_names)
    np.testing.assert_allclose(np.asarray(a.X), np.asarray(b.X), atol=1e-4)  # trained alike under Slurm
