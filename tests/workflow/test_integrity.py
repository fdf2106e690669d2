"""Verify what you read, through Snakemake: a stage-1 file or a model overwritten after its rule made it (same size,
other values) stops the next rule with the file, the recorded and the actual sha256, and the fix; nothing
downstream is re-scored from it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import TINY_DEMO, run_snakemake

from pertpipe.io import sha256_file

pytestmark = pytest.mark.workflow


def test_a_changed_file_stops_the_next_rule(tmp_path):
    cfg = {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500}, "models": ["cell_mean"]}
    run_snakemake(tmp_path, cfg)
    res = tmp_path / "results/demo"
    board = (res / "leaderboard.csv").read_bytes()
    split = json.loads((res / "stage1/split.json").read_text())
    assert split["outputs_sha256"]["files"]["train.h5ad"] == sha256_file(res / "stage1/train.h5ad")
    assert "model.pt" in json.loads((res / "stage2/cell_mean/train_log.json").read_text())["outputs_sha256"]["files"]
    assert "predictions.h5ad" in json.loads((res / "stage2/cell_mean/predict.json").read_text())["outputs_sha256"][
        "files"]

    # a model file replaced by another of the same size: predict refuses it
    model = res / "stage2/cell_mean/model.pt"
    original = model.read_bytes()
    recorded = sha256_file(model)
    model.write_bytes(original[:-8] + bytes(8))
    proc = run_snakemake(tmp_path, cfg, check=False)
    out = proc.stdout + proc.stderr + (res / "logs/predict_cell_mean.log").read_text()
    assert proc.returncode != 0
    assert f"model.pt: field 'sha256': is {sha256_file(model)} but rule train_cell_mean recorded {recorded}" in out
    assert "snakemake --forcerun train_cell_mean" in out
    assert (res / "leaderboard.csv").read_bytes() == board
    model.write_bytes(original)

    # a model.pt whose blob names another model (STATE) and carries a pickle as its checkpoint, with train_log.json's
    # record forged to match (whoever supplies model.pt can supply both): refused by name, the payload never runs
    import pickle

    import torch

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').write('x')",))

    blob = {"name": "state", "params": {}, "seed": 0, "genes": ["G"], "shrinkage": None,
            "state": {"ckpt": pickle.dumps(Payload()), "gene_idx": [0], "vec_genes": ["G"], "vec": [[0.0]],
                      "x_max": 1.0}}
    torch.save(blob, model)
    log = res / "stage2/cell_mean/train_log.json"
    saved_log = log.read_text()
    forged = json.loads(saved_log)
    forged["outputs_sha256"]["files"]["model.pt"] = sha256_file(model)
    log.write_text(json.dumps(forged))
    from pertpipe.integrity import sidecar

    saved_sides = {p: sidecar(p).read_text() for p in (model, log)}
    sidecar(model).write_text(f"{sha256_file(model)} train_cell_mean\n")
    sidecar(log).write_text(f"{sha256_file(log)} train_cell_mean\n")
    proc = run_snakemake(tmp_path, cfg, "results/demo/stage2/cell_mean/predictions.h5ad",
                         extra=("--forcerun", "predict_cell_mean"), check=False)
    out = proc.stdout + proc.stderr + (res / "logs/predict_cell_mean.log").read_text()
    assert proc.returncode != 0 and not marker.exists()
    assert "model.pt: field 'name': is 'state', but the model configured for this folder is 'cell_mean'" in out
    log.write_text(saved_log)
    model.write_bytes(original)
    for p, text in saved_sides.items():
        sidecar(p).write_text(text)

    # a scorer's per-perturbation table edited after its batch wrote it: the leaderboard (which verified nothing
    # before) refuses it; so does every rule, through the sidecar records every rule writes
    run_snakemake(tmp_path, cfg)  # the forced predict above failed: back to a complete run first
    assert (res / "leaderboard.csv").read_bytes() == board
    results = res / "stage3/cell_mean/results.csv"
    kept = results.read_text()
    results.write_text(kept.replace("0.", "1.", 1))
    proc = run_snakemake(tmp_path, cfg, extra=("--forcerun", "leaderboard"), check=False)
    log = proc.stdout + proc.stderr + "".join(p.read_text() for p in (res / "logs").glob("*.log"))
    assert proc.returncode != 0 and "cell_mean/results.csv: field 'sha256'" in log
    assert "rule celleval_rows_0 recorded" in log
    assert (res / "leaderboard.csv").read_bytes() == board or not (res / "leaderboard.csv").exists()
    results.write_text(kept)
    assert ".results.csv.sha256" in {p.name for p in (res / "stage3/cell_mean").glob(".*.sha256")}

    # 2,000 values of the training split overwritten in place (same size): every consumer refuses it
    train = res / "stage1/train.h5ad"
    size = train.stat().st_size
    with h5py.File(train, "r+") as f:
        data = f["X/data"]
        data[:2000] = np.asarray(data[:2000]) * 1.5 + 0.25
    assert train.stat().st_size == size
    proc = run_snakemake(tmp_path, cfg, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (res / "logs").glob("*.log"))
    assert f"train.h5ad: field 'sha256': is {sha256_file(train)} but rule split recorded" in logs
    assert "snakemake --forcerun split" in logs
    assert (res / "leaderboard.csv").read_bytes() == board  # nothing re-scored from the changed file
    report = res / "stage1/stage1_report.json"
    assert not report.exists() or json.loads(report.read_text())["sha256"]["train"] != sha256_file(train)
