"""The run plan (pertpipe.workflow.plan) without Snakemake: the config merged with the schema's defaults, as the
Snakefile does, gives each task's files, the scored rows, the models' own resources and the input kinds' paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from pertpipe.errors import ConfigError
from pertpipe.models import inputs as model_inputs
from pertpipe.workflow.plan import RunPlan

REPO = Path(__file__).resolve().parents[2]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def plan_of(tmp_path: Path, **over) -> RunPlan:
    cfg = _merge(yaml.safe_load((REPO / "config.yaml").read_text()), over)
    validate(cfg, str(REPO / "schemas" / "config.schema.yaml"))  # fills the defaults, as the Snakefile does
    return RunPlan(cfg, basedir=str(REPO), cwd=str(tmp_path), cores=2)


def test_the_demo_plan_names_the_cells_task_files_and_rows(tmp_path):
    plan = plan_of(tmp_path)
    assert plan.task.name == "cells" and plan.dataset == "demo"
    assert "dygenept_raw" in plan.rows and plan.trained_model("dygenept_raw") == "dygenept"
    assert sorted(r for b in plan.row_batches for r in b) == sorted(plan.rows)
    assert plan.row_batches[0][0] == "control"  # baselines that read no knowledge are scored first
    files = plan.predict_inputs("dygenept_raw")
    assert files["model"] == "results/{dataset}/stage2/dygenept/model.pt"
    assert files["template"].endswith("stage1/template.csv") and files["ground_truth"].endswith("ground_truth.json")
    assert plan.stage1_targets("demo") == ["results/demo/stage1/stage1_report.json",
                                           "results/demo/stage1/stage1_report.txt"]
    assert plan.stage3_targets("demo")[0] == "results/demo/leaderboard.csv" and plan.vcc2026
    assert plan.baseline_file("results.csv") == "results/{dataset}/stage3/cell_mean/results.csv"
    assert plan.job_threads(2) == 1


def test_a_labels_plan_asks_the_labels_task(tmp_path):
    plan = plan_of(tmp_path, dataset="perturbqa_k562", models=["knowledge_ridge", "dygenept"])
    assert plan.task.name == "labels" and plan.raw_rows == {} and plan.row_batches == [] and not plan.vcc2026
    files = plan.predict_inputs("dygenept")
    assert files["train"].endswith("labels_train.h5ad") and files["template"].endswith("labels_template.csv")
    assert "ground_truth" not in files
    assert plan.knowledge_genes(None).endswith("stage1/label_genes.txt")
    assert plan.stage1_targets("perturbqa_k562")[0].endswith("labels_report.json")
    assert set(plan.report_inputs(type("W", (), {"dataset": "perturbqa_k562"}))) == {
        "leaderboard", "figure", "stage1", "logs", "metrics"}
    assert plan.label_lines("perturbqa_k562")["k562"]["de"].endswith("k562-de.csv")


def test_resources_come_from_the_model_class_for_an_alias_too(tmp_path):
    plan = plan_of(tmp_path, models=["cell_mean", "dygenept", "dyg_small"],
                   model_params={"dyg_small": {"model": "dygenept", "latent_dim": 8}})
    assert plan.train_resources("cell_mean")["mem_mb"] == 8000
    assert plan.train_resources("dygenept")["mem_mb"] == plan.train_resources("dyg_small")["mem_mb"] == 16000
    assert plan.predict_resources("dyg_small")["runtime"] == 120
    on = plan_of(tmp_path, models=["cell_mean", "cfmvc"], distributed={"enabled": True, "nproc_per_node": 2},
                 model_params={"cfmvc": {"device": "cuda"}})
    assert on.train_resources("cfmvc")["gpu"] == 2 and on.train_resources("cell_mean")["gpu"] == 0


def test_only_models_that_support_it_train_data_parallel(tmp_path):
    with pytest.raises(ConfigError, match=r"distributed.models: \['linear'\] cannot train data-parallel"):
        plan_of(tmp_path, distributed={"enabled": True, "models": ["linear"]})


def test_an_input_kind_carries_its_path(tmp_path, monkeypatch):
    plan = plan_of(tmp_path)
    assert plan.input_file("knowledge", "demo") == "results/demo/knowledge/facet_embeddings.pt"
    assert plan.input_file("gene2go", "demo") == "results/demo/raw/annotations/gene2go.gz"
    kind = model_inputs.InputKind("atlas", ("atlas",), "a new kind", {"atlas": "{results}/{dataset}/stage1/atlas.h5ad"})
    monkeypatch.setitem(model_inputs.INPUT_KINDS, "atlas", kind)
    assert plan.input_file("atlas", "demo") == "results/demo/stage1/atlas.h5ad"


def test_a_split_that_does_not_fit_the_task_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a labels task"):
        plan_of(tmp_path, dataset="perturbqa_k562", models=["knowledge_ridge"], stage1={"split": {"strategy": "vcc"}})
