"""A model is one module in a folder of the user's own: it runs through Snakemake like any model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from conftest import TINY_DEMO, TOY_MODEL, run_snakemake


def test_one_module_runs_through_snakemake(tmp_path):
    """The toy model is ONE file in a folder of the user's own ($PERTPIPE_MODELS_PATH): no rule, runner or script is
    edited, and it trains (with its declared input passed by the rule), predicts and is scored like any model."""
    plugins = tmp_path / "my_models"
    plugins.mkdir()
    (plugins / "toy_shift.py").write_text(TOY_MODEL)
    wd = tmp_path / "wd"
    run_snakemake(wd, {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
                       "models": ["cell_mean", "toy_shift"], "model_params": {"toy_shift": {"size": 0.1}},
                       "knowledge": {"cache_dir": str(wd / "cache")}},
                  env={"PERTPIPE_MODELS_PATH": str(plugins), "HF_HUB_OFFLINE": "1"}, timeout=1200)
    res = wd / "results/demo"
    log = json.loads((res / "stage2/toy_shift/train_log.json").read_text())
    assert log["model"] == "toy_shift" and log["facets_read"].endswith("knowledge/facet_embeddings.pt")
    board = pd.read_csv(res / "leaderboard.csv").set_index("model")
    assert {"cell_mean", "toy_shift"} <= set(board.index)
    assert board.loc["toy_shift", "MAE"] != board.loc["cell_mean", "MAE"]  # its own predictions were scored


LABELS_MODEL = '''"""A labels model of the user's own, in one module: its learner beside it (a readout gene's DE / up rate over the
training perturbations, smoothed), nothing else edited."""
from dataclasses import dataclass

import numpy as np

from pertpipe.models.base import LabelsOnly, register_model
from pertpipe.models.label_learner import Learner, labelled, positives


class GeneRateLearner(Learner):
    name = "gene_rate"

    def fit(self, data, kn, threads=1):
        self.genes = list(data.genes)
        self.rate = {k: (positives(c).sum(0) + 1) / (labelled(c).sum(0) + 2) for k, c in (("de", data.de),
                                                                                           ("dir", data.dir))}
        return {"rows": int(len(data.perts)), "prior": self.p.prior}

    def predict(self, perts, lines):
        return tuple(np.repeat(self.rate[k][None], len(perts), 0) for k in ("de", "dir"))

    def state(self):
        return {"genes": self.genes, "de": self.rate["de"], "dir": self.rate["dir"]}

    def set_state(self, state, kn_blob=None):
        self.genes = list(state["genes"])
        self.rate = {k: np.asarray(state[k]) for k in ("de", "dir")}


@register_model("gene_rate")
class GeneRate(LabelsOnly):
    label_learner = GeneRateLearner

    @dataclass
    class Params:
        prior: float = 1.0
'''


def test_one_labels_module_runs_through_snakemake(tmp_path):
    """A labels model is one module too (its learner beside it, no registry to add it to): it trains on a tiny labels
    set of the user's own, predicts every test pair and is on the label leaderboard."""
    plugins = tmp_path / "my_models"
    plugins.mkdir()
    (plugins / "gene_rate.py").write_text(LABELS_MODEL)
    rng = np.random.default_rng(0)
    perts, genes = [f"P{i}" for i in range(16)], [f"G{j}" for j in range(12)]
    de, dr = ["pert,gene,label,split"], ["pert,gene,label,split"]
    for i, p in enumerate(perts):
        split = "test" if i % 4 == 0 else "train"
        for j, g in enumerate(genes):
            hit = int(rng.random() < 0.2 + 0.05 * j)
            de.append(f"{p},{g},{hit},{split}")
            if hit:
                dr.append(f"{p},{g},{int(rng.random() < 0.7)},{split}")
    (tmp_path / "de.csv").write_text("\n".join(de) + "\n")
    (tmp_path / "dir.csv").write_text("\n".join(dr) + "\n")
    wd = tmp_path / "wd"
    run_snakemake(wd, {"dataset": "mine", "models": ["gene_rate"], "model_params": {"gene_rate": {"prior": 2.0}},
                       "stage1": {"split": {"strategy": "given"}, "universe": {"alias_rescue": False}},
                       "datasets": {"mine": {"path": str(tmp_path / "de.csv"), "adapter": "perturbqa",
                                             "adapter_options": {"dir": str(tmp_path / "dir.csv")}}}},
                  env={"PERTPIPE_MODELS_PATH": str(plugins)})
    res = wd / "results/mine"
    log = json.loads((res / "stage2/gene_rate/train_log.json").read_text())
    assert log["learner"] == "gene_rate" and log["prior"] == 2.0 and log["rows"] == 12
    board = pd.read_csv(res / "label_leaderboard.csv")
    row = board[board.model == "gene_rate"].iloc[0]
    assert 0 < row["auc_de"] <= 1  # its own scores of the 4 test perturbations were scored
    assert (res / "report.html").exists()
