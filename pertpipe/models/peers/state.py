"""STATE (Adduri et al. 2025, Arc Institute; PyPI ``arc-state``) as a registered peer model, trained by its own
code on our split.

What the wrapper does, and what it leaves to STATE:

* **Data.** The training split's log1p cells (at most ``max_cells``, default 9,000 so that cell-load's 10,000-row
  cache holds them all; controls kept) on the ``n_genes`` most
  variable genes plus every training target among the genes (:func:`pertpipe.models.peers.common.training_cells`),
  written as the h5ad cell-load reads (categorical ``target_gene`` / ``cell_type`` / ``batch``, CSR X,
  ``uns["log1p"]``), and a cell-load TOML: the whole file is training data, and in each cell type
  ``val_fraction`` of the training targets are its few-shot validation perturbations. Our held-out
  perturbations never reach STATE (the TOML has no test perturbations).
* **Unseen targets.** STATE's one-hot perturbation encoding cannot name a target it has not seen. As STATE does
  for genetic perturbations with ESM2 gene embeddings, the wrapper hands it a ``perturbation_features_file``:
  each gene's vector from our knowledge stage (the facet embeddings averaged over the facets that have text),
  the sum of both genes' vectors for a combination, zeros for the control. Held-out targets get their vectors at
  prediction time the same way; a target without knowledge is predicted from the zero vector (noted).
* **Training.** ``state tx train`` (its hydra CLI, in a subprocess) with the ``state_sm`` architecture at the
  configured sizes: a set of ``cell_set_len`` control cells goes through STATE's transformer to the
  perturbed set, trained with its energy-distance loss; ``max_steps`` optimiser steps on CPU or CUDA.
* **Prediction.** STATE's ``predict_step`` (as ``state tx infer`` calls it) on the drawn control cells, in sets
  of ``cell_set_len``, one perturbation per set; genes outside the trained genes keep the control cell's value.

Licence: arc-state's code is CC BY-NC-SA 4.0 (non-commercial): an optional extra (``peers``), never a default
dependency; ``train_log.json`` and the report record the package, version and licence.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pertpipe import CONTROL_LABEL, perturbation_genes
from pertpipe.errors import ConfigError, PertpipeError
from pertpipe.io import child_options, explain_exit
from pertpipe.models.base import GeneratesCells, register_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.peers.common import peer_record, require_peer, training_cells

STATE_PACKAGES = "arc-state==0.11.1"


class StateTrainingError(PertpipeError):
    """``state tx train`` failed; the message carries the end of its log."""


def gene_vectors(knowledge: Any) -> tuple[list[str], np.ndarray]:
    """Per knowledge-stage gene: its facet embeddings averaged over the facets that have text ([G, D] float32)."""
    from pertpipe.models.facet_lookup import FacetLookup

    lk = FacetLookup.load(knowledge)
    w = lk.mask[:, :, None]
    vec = (lk.tensor * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    return list(lk.genes), vec.astype(np.float32)


def _toml(dataset_dir: str, cell_val: dict[str, list[str]]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[datasets]", f"pertpipe = {q(dataset_dir)}", "", "[training]", 'pertpipe = "train"', "", "[fewshot]"]
    for ct, val in cell_val.items():
        lines.append(f"{q('pertpipe.' + ct)} = {{ val = [{', '.join(q(v) for v in val)}], test = [] }}")
    return "\n".join(lines) + "\n"


def _numpy_data_types() -> list[Any]:
    """The numpy classes a Lightning checkpoint's hyperparameters hold (scalars such as np.int64 and their dtypes):
    data, allowlisted for torch's weights-only unpickler; nothing else is."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]

    return [scalar, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]


def plain_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """STATE's Lightning checkpoint as plain data: ``{"state_dict": {name: tensor}, "hparams": JSON text,
    "global_step": int}``. Read with torch's weights-only unpickler (tensors, containers and the numpy scalar types
    of :func:`_numpy_data_types`); a checkpoint that needs anything else is refused, not run."""
    import pickle

    import torch

    from pertpipe.errors import ContractError

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v.item() if isinstance(v, np.generic) else v

    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ContractError(path, "pickle", f"STATE's checkpoint holds Python objects beyond tensors and numpy "
                            f"scalars ({str(exc).splitlines()[0][:160]})", "use arc-state 0.11.1 (the pinned "
                            "version), whose checkpoints hold plain hyperparameters") from None
    try:
        hparams = json.dumps(plain(ck["hyper_parameters"]), sort_keys=True)
    except TypeError as exc:
        raise ContractError(path, "hyper_parameters", f"not plain data ({exc})", "use arc-state 0.11.1") from None
    return {"state_dict": {k: v.detach().cpu().contiguous() for k, v in ck["state_dict"].items()},
            "hparams": hparams, "global_step": int(ck["global_step"])}


@register_model("state")
class StateModel(GeneratesCells):
    """STATE trained by its own code (``state tx train``) on the training split (peer; optional extra ``peers``)."""

    inputs = ("knowledge",)  # perturbation features for targets STATE has not seen
    # GeneratesCells: STATE predicts sets of cell_set_len cells together
    peer: ClassVar[dict[str, str]] = {"distribution": "arc-state", "licence": "CC BY-NC-SA 4.0 (non-commercial)",
                                      "source": "https://github.com/ArcInstitute/state"}

    @dataclass
    class Params:
        n_genes: int = 2000  # most variable genes modelled (0: all); training targets are always included
        # training cells handed to STATE (random, seeded; controls kept). cell-load reads one row at a time from
        # HDF5 behind a 10,000-row LRU cache: up to 9,000 cells every row stays cached after its first read
        # (0.25 s a step on 2 CPU cores, Papalexi), 12,193 cells thrash it (6 s a step)
        max_cells: int = 9000
        cell_set_len: int = 64  # cells per set (STATE's "cell sentence")
        hidden_dim: int = 128
        n_layers: int = 4
        n_heads: int = 4
        intermediate_size: int = 512
        max_steps: int = 2000
        batch_size: int = 16  # sets per step
        lr: float = 1e-4
        val_fraction: float = 0.1  # training targets per cell type STATE validates on
        val_freq: int = 500
        # final: the last step (what `state tx predict` loads by default); best: the checkpoint STATE's own
        # ModelCheckpoint keeps (lowest val_loss on its val perturbations, checked every val_freq steps). On
        # Papalexi STATE's eval-mode val_loss rose after step 500 (2.16 -> 3.05 by step 2,000) while its
        # train-mode loss fell to 0.82
        checkpoint: str = "final"
        device: str = "auto"  # auto: CUDA when present (STATE's own choice); cpu: hide the GPUs

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        require_peer("state", ("state", "cell_load"), STATE_PACKAGES, self.peer["licence"])
        super().__init__(params, seed=seed)
        p = self.params
        if p.hidden_dim % p.n_heads:
            raise ConfigError(f"model_params.state: hidden_dim {p.hidden_dim} is not a multiple of n_heads "
                              f"{p.n_heads}. Fix: choose sizes with hidden_dim = n_heads x head size")
        if p.checkpoint not in ("best", "final"):
            raise ConfigError(f"model_params.state.checkpoint '{p.checkpoint}': use best or final")
        if p.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"model_params.state.device '{p.device}': use auto, cpu or cuda")
        self._module = None
        self.clipped: dict[str, int] = {}

    # -- training -----------------------------------------------------------------------------------------
    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        train, knowledge = inputs.train, inputs.need("knowledge", "state")
        from pertpipe.core.h5io import H5adReader

        t0 = time.perf_counter()
        p = self.params
        self._summarise(inputs)
        names, vec = gene_vectors(knowledge)
        self.vec_genes, self.vec = names, vec
        with H5adReader(train) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str)
        target = obs["target_gene"].to_numpy()
        X, rows, keep = training_cells(train, self.genes, target, np.ones(len(target), bool),
                                       max_cells=p.max_cells, n_genes=p.n_genes, seed=self.seed)
        self.gene_idx = keep
        # STATE's output layer is linear and unbounded: its predictions are clipped to the range of the cells it
        # trained on (a seed on Papalexi predicted 17.3 where the data end at ~8, past cell-eval's log1p limit)
        self.x_max = float(X.max()) if X.nnz else 0.0
        sub = obs.iloc[rows].reset_index(drop=True)
        rng = np.random.default_rng(self.seed)
        cell_val = {}
        for ct, tg in sub.groupby("cell_type")["target_gene"]:
            perts = sorted(set(tg) - {CONTROL_LABEL})
            if len(perts) < 2:
                raise ConfigError(f"{train}: STATE needs at least 2 training perturbations in cell type '{ct}', "
                                  f"found {len(perts)}. Fix: use a dataset with more perturbations, or leave 'state' out")
            n_val = max(1, int(round(p.val_fraction * len(perts))))
            cell_val[str(ct)] = sorted(rng.choice(perts, n_val, replace=False).tolist())
        missing = sorted({t for t in set(sub["target_gene"]) - {CONTROL_LABEL} if not self._known(t)})
        with tempfile.TemporaryDirectory(prefix="state-") as tmp:
            ckpt, log = self._train_state(X, sub, keep, cell_val, tmp)
        self.ckpt = ckpt
        self._module = None
        log.update({"fit_s": round(time.perf_counter() - t0, 3), "state_genes": int(len(keep)),
                    "train_cells": int(len(rows)), "state_val_perturbations": cell_val,
                    "train_targets_without_knowledge": missing, "peer": peer_record(**self.peer)})
        return log

    def _known(self, target: str) -> bool:
        idx = {g: i for i, g in enumerate(self.vec_genes)}
        return all(g in idx and np.any(self.vec[idx[g]]) for g in perturbation_genes(target))

    def pert_vector(self, target: str) -> np.ndarray:
        """The perturbation feature of a label: the sum of its genes' knowledge vectors (zeros for the control
        and for genes without knowledge)."""
        if not hasattr(self, "_vec_index"):
            self._vec_index = {g: i for i, g in enumerate(self.vec_genes)}
        out = np.zeros(self.vec.shape[1], np.float32)
        for g in perturbation_genes(target):
            i = self._vec_index.get(g)
            if i is not None:
                out += self.vec[i]
        return out

    def _train_state(self, X, obs: pd.DataFrame, keep: np.ndarray, cell_val: dict[str, list[str]], tmp: str):
        import anndata as ad
        import torch

        p = self.params
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        cat = {c: pd.Categorical(obs[c].to_numpy()) for c in ("target_gene", "cell_type", "batch")}
        a = ad.AnnData(X=X, obs=pd.DataFrame(cat, index=[f"c{i}" for i in range(len(obs))]),
                       var=pd.DataFrame(index=pd.Index(np.asarray(self.genes)[keep])), uns={"log1p": {"base": None}})
        a.write_h5ad(os.path.join(data_dir, "pertpipe.h5ad"))
        toml = os.path.join(tmp, "split.toml")
        with open(toml, "w") as fh:
            fh.write(_toml(data_dir, cell_val))
        feats = {t: torch.from_numpy(self.pert_vector(t)) for t in sorted(set(obs["target_gene"]))}
        feat_path = os.path.join(tmp, "pert_features.pt")
        torch.save(feats, feat_path)
        heads = p.n_heads
        overrides = [
            "model=state_sm", f"data.kwargs.toml_config_path={toml}", f"data.kwargs.perturbation_features_file={feat_path}",
            "data.kwargs.pert_col=target_gene", "data.kwargs.cell_type_key=cell_type", "data.kwargs.batch_col=batch",
            f"data.kwargs.control_pert={CONTROL_LABEL}", "data.kwargs.output_space=all", "data.kwargs.embed_key=null",
            "data.kwargs.num_workers=0", "data.kwargs.pin_memory=false", f"+data.kwargs.random_seed={self.seed}",
            f"model.kwargs.cell_set_len={p.cell_set_len}", f"model.kwargs.hidden_dim={p.hidden_dim}",
            f"model.kwargs.n_encoder_layers={p.n_layers}", f"model.kwargs.n_decoder_layers={p.n_layers}",
            f"model.kwargs.transformer_backbone_kwargs.num_hidden_layers={p.n_layers}",
            f"model.kwargs.transformer_backbone_kwargs.intermediate_size={p.intermediate_size}",
            f"model.kwargs.transformer_backbone_kwargs.num_attention_heads={heads}",
            f"model.kwargs.transformer_backbone_kwargs.num_key_value_heads={heads}",
            f"model.kwargs.transformer_backbone_kwargs.head_dim={p.hidden_dim // heads}",
            f"training.max_steps={p.max_steps}", f"training.batch_size={p.batch_size}", f"training.lr={p.lr}",
            f"training.train_seed={self.seed}", f"training.val_freq={min(p.val_freq, p.max_steps)}",
            f"training.ckpt_every_n_steps={max(p.max_steps, 1)}", "+training.log_every_n_steps=10",
            "use_wandb=false", f"output_dir={os.path.join(tmp, 'run')}", "name=pertpipe",
        ]
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": str(self.seed)}
        if p.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        log_path = os.path.join(tmp, "state_train.log")
        t0 = time.perf_counter()
        with open(log_path, "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "state", "tx", "train", *overrides], cwd=tmp, env=env,
                                  stdout=fh, stderr=subprocess.STDOUT, **child_options())
        train_s = time.perf_counter() - t0
        run_dir = os.path.join(tmp, "run", "pertpipe")
        ckpt_path = os.path.join(run_dir, "checkpoints", "final.ckpt")
        if proc.returncode != 0 or not os.path.exists(ckpt_path):
            with open(log_path) as fh:
                tail = fh.read()[-3000:]
            raise StateTrainingError(f"{explain_exit('state tx train', proc.returncode)}; the end of its log:\n{tail}")
        best_path = os.path.join(run_dir, "checkpoints", "best.ckpt")
        chosen = best_path if p.checkpoint == "best" and os.path.exists(best_path) else ckpt_path
        ckpt = plain_checkpoint(chosen)
        log: dict[str, Any] = {"state_train_s": round(train_s, 3), "steps": p.max_steps,
                               "checkpoint": os.path.basename(chosen),
                               "device": "cuda" if "CUDA_VISIBLE_DEVICES" not in env and torch.cuda.is_available()
                               else "cpu"}
        metrics = os.path.join(run_dir, "version_0", "metrics.csv")
        if os.path.exists(metrics):
            m = pd.read_csv(metrics)
            for col, key in (("train_loss", "loss"), ("val_loss", "val_loss")):
                if col in m:
                    s = m[["step", col]].dropna()
                    log[key] = [float(v) for v in s[col]]
                    log[f"{key}_steps"] = [int(v) for v in s["step"]]
        if chosen == best_path:
            log["checkpoint_step"] = ckpt["global_step"]
        if self.params.max_steps:
            log["cells_seen"] = int(p.max_steps * p.batch_size * p.cell_set_len)
            log["cells_per_s"] = round(log["cells_seen"] / max(train_s, 1e-9), 1)
        return ckpt, log

    # -- prediction ---------------------------------------------------------------------------------------
    def _net(self):
        if self._module is None:
            import torch
            from state.tx.models.state_transition import StateTransitionPerturbationModel

            with contextlib.redirect_stdout(io.StringIO()):  # it prints the whole module
                # rebuilt from plain data (plain_checkpoint): its hyperparameters (JSON) and its weights, as
                # Lightning's load_from_checkpoint does, without unpickling anything
                m = StateTransitionPerturbationModel(**json.loads(self.ckpt["hparams"]))
            m.load_state_dict({k: torch.as_tensor(v) for k, v in self.ckpt["state_dict"].items()}, strict=True)
            m.eval()
            self._module = m
        return self._module


    def predict_cells(self, target, cell_type, batch, controls, pick, rng) -> np.ndarray:
        import torch

        dense = controls.x[pick].toarray().astype(np.float32)
        if not self._known(target):
            self.notes[target] = "no knowledge vector for its gene(s): STATE was given the zero (control) feature"
        net = self._net()
        vec = torch.from_numpy(self.pert_vector(target))
        out = dense.astype(np.float64)
        x_in = dense[:, self.gene_idx]
        step = self.params.cell_set_len
        with torch.no_grad():
            for s in range(0, len(pick), step):
                win = torch.from_numpy(np.ascontiguousarray(x_in[s:s + step]))
                batch_in = {"ctrl_cell_emb": win, "pert_emb": vec.unsqueeze(0).repeat(len(win), 1),
                            "pert_name": [target] * len(win)}
                pred = net.predict_step(batch_in, batch_idx=0, padded=False)["preds"]
                out[s:s + step, self.gene_idx] = pred.cpu().numpy()
        mine = out[:, self.gene_idx]  # STATE's genes; the others are the control cells' own values
        above = int((mine > self.x_max).sum())
        if above:
            self.clipped[target] = self.clipped.get(target, 0) + above
            self.notes["clipped_above_training_max"] = (f"{sum(self.clipped.values())} predicted values above the "
                                                        f"training cells' maximum {self.x_max:.3g} were clipped to it "
                                                        f"(per target: {dict(sorted(self.clipped.items()))})")
        out[:, self.gene_idx] = np.clip(mine, 0, self.x_max, out=mine)
        return np.clip(out, 0, None, out=out)

    def state(self) -> dict[str, Any]:
        return {"ckpt": self.ckpt, "gene_idx": self.gene_idx, "vec_genes": self.vec_genes, "vec": self.vec,
                "x_max": self.x_max}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state.get("ckpt"), dict) or set(state["ckpt"]) != {"state_dict", "hparams", "global_step"}:
            from pertpipe.errors import ContractError

            raise ContractError("model.pt", "state.ckpt", "holds STATE's checkpoint in the old pickled form (or not "
                                "at all), which loading would have to unpickle", "re-train it with this version of "
                                "pertpipe (snakemake --forcerun train_state)")
        self.ckpt = state["ckpt"]
        self.gene_idx = np.asarray(state["gene_idx"])
        self.vec_genes = list(state["vec_genes"])
        self.vec = np.asarray(state["vec"], dtype=np.float32)
        self.x_max = float(state["x_max"])
        self._module = None
