"""The model contract and registry.

A model is one registered module: a class with typed ``Params`` (checked when the config is read), the tasks it
serves (``tasks``: keys of :data:`TASK_METHODS`), the input kinds it reads (``inputs``: names in
:data:`pertpipe.models.inputs.INPUT_KINDS`), ``fit(inputs)`` on a typed :class:`~pertpipe.models.inputs.ModelInputs`,
``state()``/``set_state()`` for persistence, and the prediction method of each task it serves, taken from one of the
prediction levels below. Rules, the runner and the CLI derive files and arguments from these declarations, so adding
a model is one module plus its name in config ``models:``.

Prediction levels (mixins; each gives the cells task's ``predict_cells`` from what the model defines):

* :class:`PredictsShift`: one mean shift (log1p) per (target, cell type), added to each drawn control cell;
* :class:`PredictsCellShifts`: a change per drawn control cell (the shift depends on the cell's state);
* :class:`GeneratesCells`: the model makes a row's cells itself from the drawn controls (generative models);
* :class:`PredictsSignatures`: one signature per (target, cell type) (the signatures task);
* :class:`PredictsLabels`: DE and direction scores per readout gene of (target, line) rows (the labels task), from
  the model's learner (``label_learner``, a :class:`pertpipe.models.label_learner.Learner` beside it).

:func:`register_model` refuses a class whose declarations do not match what it implements.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from pertpipe.errors import ConfigError
from pertpipe.models.inputs import ModelInputs, check_kinds

PREDICT_BLOCK_ENTRIES = 1 << 23  # cells x genes the writer predicts at a time (~460 cells at 18,080 genes)


MODELS: dict[str, type[PerturbationModel]] = {}

# The prediction method a model serving each task implements (the tasks in pertpipe.tasks call it).
TASK_METHODS = {"cells": "predict_cells", "signatures": "predict_signature", "labels": "predict_labels",
                "spatial": "impute"}


def require_task(model: PerturbationModel, task: str, where: str) -> None:
    """Refuse ``model`` for ``task`` unless it declares and implements it (``where``: the file being written)."""
    if task not in type(model).tasks or not callable(getattr(model, TASK_METHODS[task], None)):
        ok = sorted(n for n, c in MODELS.items() if task in c.tasks)
        raise ConfigError(f"{where}: model {model.name} does not predict the {task} task. Fix: use a model that "
                          f"does ({', '.join(ok)})")


def register_model(name: str) -> Callable[[type[PerturbationModel]], type[PerturbationModel]]:
    """Class decorator: make a model available under ``name`` in config ``models:`` (its contract checked)."""
    def deco(cls: type[PerturbationModel]) -> type[PerturbationModel]:
        cls.name = name
        check_kinds(name, cls.inputs)
        for task in cls.tasks:
            if task not in TASK_METHODS:
                raise ConfigError(f"model {name} declares unknown task '{task}'. Fix: use {sorted(TASK_METHODS)}")
            if not callable(getattr(cls, TASK_METHODS[task], None)):
                raise ConfigError(f"model {name} declares task '{task}' but has no {TASK_METHODS[task]}(). Fix: "
                                  "derive from the prediction level that gives it (pertpipe.models.base)")
        if "labels" in cls.tasks and not isinstance(getattr(cls, "label_learner", None), type):
            raise ConfigError(f"model {name} declares task 'labels' but names no learner class. Fix: set "
                              "label_learner to a pertpipe.models.label_learner.Learner subclass beside the model")
        MODELS[name] = cls
        return cls
    return deco


MODELS_PATH_ENV = "PERTPIPE_MODELS_PATH"  # folders (os.pathsep-separated) of a user's own model modules


def discover_models() -> None:
    """Import every module of the ``pertpipe.models`` package (subpackages included: the peers), every ``.py`` in
    the folders of ``$PERTPIPE_MODELS_PATH`` and every ``pertpipe.models`` entry point, so their ``@register_model``
    runs: a new model is a module (in the package, a folder of one's own, or an installed plugin), no list to edit."""
    import importlib
    import importlib.metadata
    import importlib.util
    import pkgutil
    import sys
    from pathlib import Path

    import pertpipe.models as package

    for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
        if info.name == f"{package.__name__}.modules":  # torch networks, imported when a model trains or loads
            continue
        sub = importlib.import_module(info.name)
        if info.ispkg:  # e.g. the peers
            for inner in pkgutil.iter_modules(sub.__path__, prefix=f"{info.name}."):
                importlib.import_module(inner.name)
    for folder in filter(None, os.environ.get(MODELS_PATH_ENV, "").split(os.pathsep)):
        if not Path(folder).is_dir():
            raise ConfigError(f"${MODELS_PATH_ENV} names {folder}, which is not a folder. Fix: give folders of "
                              "model modules, separated by ':'")
        for path in sorted(Path(folder).glob("*.py")):
            name = f"pertpipe_user_models.{path.stem}"
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
    for ep in importlib.metadata.entry_points(group="pertpipe.models"):
        ep.load()


def get_model_class(name: str) -> type[PerturbationModel]:
    if name not in MODELS:
        discover_models()
    if name not in MODELS:
        raise ConfigError(f"config models: unknown model '{name}'. Fix: use one of {sorted(MODELS)} "
                          "(or add a module to pertpipe/models with @register_model, or a 'pertpipe.models' "
                          "entry point)")
    return MODELS[name]


def build_model(name: str, hparams: dict[str, Any] | None = None, *, seed: int = 0) -> PerturbationModel:
    """Instantiate registered model ``name`` with ``hparams`` checked against its typed ``Params`` dataclass."""
    from pertpipe.core.params import check_params

    cls = get_model_class(name)
    hp = dict(hparams or {})
    check_params(name, cls.Params, hp)
    return cls(cls.Params(**hp), seed=seed)


class PerturbationModel(ABC):
    """Base class: subclasses define ``Params``, ``tasks``, ``inputs``, ``fit``, ``state``/``set_state`` and
    derive from a prediction level (the mixins below)."""

    name: ClassVar[str] = "base"
    tasks: ClassVar[tuple[str, ...]] = ("cells",)
    inputs: ClassVar[tuple[str, ...]] = ()  # input kinds fit() reads (pertpipe.models.inputs.INPUT_KINDS)
    task_inputs: ClassVar[dict[str, tuple[str, ...]]] = {}  # a task whose fit reads other kinds -> those
    baseline: ClassVar[bool] = False  # a reference model: rows are compared with the strongest baseline
    supports_ddp: ClassVar[bool] = False  # its training loop shards batches under torchrun (config `distributed:`)
    # scheduler resources of its train / predict rules (MB, minutes): the rules and the SLURM profile read them, so
    # an alias of the model (model_params.<alias>.model) gets its model's
    train_resources: ClassVar[dict[str, int]] = {"mem_mb": 8000, "runtime": 240}
    predict_resources: ClassVar[dict[str, int]] = {"mem_mb": 8000, "runtime": 60}
    uses_counts: ClassVar[bool] = False  # predict_cells reads the drawn controls' raw counts (when present)
    uses_spatial: ClassVar[bool] = False  # ... and their obsm["spatial"] (when present)
    # predict_cells treats each drawn control cell on its own, so the writer may call it on blocks of a template
    # row's cells; False where a row's cells are generated together.
    cells_independent: ClassVar[bool] = True

    @dataclass
    class Params:
        pass

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        self.params = params
        self.seed = seed
        self.genes: list[str] = []
        self.train_log: dict[str, Any] = {}
        self.shrinkage: Any = None  # a pertpipe.models.shrinkage.Shrinkage, set by models that validate one
        self.notes: dict[str, str] = {}  # per perturbation: how it was predicted where not the usual way

    def equals(self) -> str | None:
        """The baseline whose predictions this fitted model's are (e.g. a learned correction validated away), else
        None: predict.json records it and the leaderboard prints the row as that baseline."""
        return None

    def reads(self, task: str = "cells") -> tuple[str, ...]:
        """The input kinds this instance reads on ``task``: the class's ``task_inputs`` for that task where it names
        it, else its ``inputs`` (a model whose hyperparameters change them overrides this)."""
        return tuple(self.task_inputs.get(task, self.inputs))

    @abstractmethod
    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        """Train on ``inputs.train`` (and the declared inputs); returns a training log (loss curves, etc.)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to restore the fitted model (arrays, lists, numbers)."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        ...

    def _summarise(self, inputs: ModelInputs) -> Any:
        """The training pseudobulk summary (chunked), setting the model's gene order."""
        from pertpipe.models.summary import TrainingSummary

        s = TrainingSummary.from_h5ad(inputs.train, chunk_size=inputs.chunk_size)
        self.genes = s.genes
        return s

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """``model.pt``: a torch-serialised dict {name, params, seed, genes, state}, written atomically."""
        from pertpipe.io import save_torch

        blob = {"name": self.name, "params": asdict(self.params), "seed": self.seed, "genes": self.genes,
                "state": self.state(), "shrinkage": self.shrinkage.state() if self.shrinkage else None}
        save_torch(blob, path)  # plain data, the same bytes for the same model

    @classmethod
    def load(cls, path: str | os.PathLike, *, expected: str | None = None) -> PerturbationModel:
        """Read ``model.pt`` (plain data, weights_only). With ``expected`` (the configured model's registered name),
        a file whose ``name`` is another model is refused before any of it is used: a file swapped in under a
        baseline's folder cannot have another model's loader run on it."""
        from pertpipe.errors import ContractError
        from pertpipe.io import load_torch

        blob = load_torch(path)  # weights_only: a model.pt from elsewhere cannot run code
        if not isinstance(blob, dict) or not isinstance(blob.get("name"), str):
            raise ContractError(path, "name", "missing: not a pertpipe model file", "delete it and re-run the "
                                "train rule that writes it")
        if expected is not None and blob["name"] != expected:
            raise ContractError(path, "name", f"is '{blob['name']}', but the model configured for this folder is "
                                f"'{expected}': the file is not what its train rule wrote", "delete it and re-run "
                                "the train rule (snakemake --forcerun train_<model>), or check model_params.<alias>"
                                ".model")
        model = build_model(blob["name"], blob["params"], seed=blob["seed"])
        model.genes = list(blob["genes"])
        model.set_state(blob["state"])
        if blob.get("shrinkage"):
            from pertpipe.models.shrinkage import Shrinkage

            model.shrinkage = Shrinkage.from_state(blob["shrinkage"])
        return model


# -- prediction levels ------------------------------------------------------------------------------------------
class PredictsCellShifts(PerturbationModel):
    """Cells task: a change per drawn control cell, added to it and clipped at 0."""

    @abstractmethod
    def predict_cell_shifts(self, target: str, cell_type: str, x_ctrl: np.ndarray) -> np.ndarray:
        """Per-cell change (log1p) for control cells ``x_ctrl`` [n x genes]."""

    def predict_cells(self, target: str, cell_type: str, batch: str, controls: Any, pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """Predicted log1p cells [len(pick) x genes] of ``target``: each drawn control row plus its change."""
        x = controls.x[pick].toarray().astype(np.float64)
        x += self.predict_cell_shifts(target, cell_type, x)
        return np.clip(x, 0, None, out=x)


class PredictsShift(PredictsCellShifts):
    """Cells task: one mean shift per (target, cell type), the same for every drawn control cell."""

    @abstractmethod
    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        """Predicted mean shift (log1p space, the model's gene order) of ``target`` in ``cell_type``."""

    def predict_cell_shifts(self, target: str, cell_type: str, x_ctrl: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.predict_shift(target, cell_type)), x_ctrl.shape)


class GeneratesCells(PerturbationModel):
    """Cells task: the model generates a template row's cells together from the drawn controls."""

    cells_independent: ClassVar[bool] = False

    @abstractmethod
    def predict_cells(self, target: str, cell_type: str, batch: str, controls: Any, pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """Predicted log1p cells [len(pick) x genes] of ``target`` from control rows ``pick``."""


class PredictsSignatures(PerturbationModel):
    """Signatures task: the predicted signature (z-scores over the model's genes) of (target, cell type)."""

    @abstractmethod
    def predict_signature(self, target: str, cell_type: str) -> np.ndarray:
        ...


class PredictsLabels(PerturbationModel):
    """Labels task: scores for every readout gene of (perturbation, line) rows, by the model's learner class
    ``label_learner`` (a :class:`pertpipe.models.label_learner.Learner` defined beside the model). The labels branching
    lives here: ``fit`` hands a labels file to :meth:`fit_labels` and any other training file to
    :meth:`fit_profiles` (the model's cells / signatures fit); ``state`` / ``set_state`` go to the learner's state
    when the model holds one, else to :meth:`profiles_state` / :meth:`set_profiles_state`."""

    label_learner: ClassVar[type | None] = None
    labeler: Any = None

    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        from pertpipe.data.labels import is_labels_file

        if is_labels_file(inputs.train):
            return self.fit_labels(inputs)
        return self.fit_profiles(inputs)

    def fit_profiles(self, inputs: ModelInputs) -> dict[str, Any]:
        """Fit on a cells or signatures file (a model that serves only the labels task refuses it)."""
        raise ConfigError(f"{self.name} serves the labels task, but {inputs.train} is not a labels file. Fix: use "
                          "it on a labels dataset (perturbqa_*)")

    def state(self) -> dict[str, Any]:
        return self.labels_state() if self.labeler is not None else self.profiles_state()

    def set_state(self, state: dict[str, Any]) -> None:
        if "labels" in state:
            return self.set_labels_state(state)
        return self.set_profiles_state(state)

    def profiles_state(self) -> dict[str, Any]:
        raise ConfigError(f"model {self.name} holds no fitted state. Fix: fit it on a labels dataset first")

    def set_profiles_state(self, state: dict[str, Any]) -> None:
        raise ConfigError(f"model {self.name} serves only the labels task, but its model.pt holds no labels state. "
                          "Fix: retrain it on a labels dataset")

    def fit_labels(self, inputs: ModelInputs) -> dict[str, Any]:
        import time

        from pertpipe.data.labels import LabelData
        from pertpipe.models.label_learner import Knowledge

        t0 = time.perf_counter()
        data = LabelData.read(inputs.train)
        kn = Knowledge.read(inputs.need("knowledge", self.name)) if "knowledge" in self.reads("labels") else None
        if kn is not None:  # model.pt keeps the tensor in float16: fit on exactly what a loaded model reads
            kn.tensor = kn.tensor.astype(np.float16).astype(np.float32)
        self.labeler = self.label_learner(self.params, self.seed)
        log = self.labeler.fit(data, kn, threads=inputs.threads)
        self.genes = list(data.genes)
        self._kn_blob = None
        if kn is not None:
            log["knowledge_coverage"] = {"perturbations": kn.coverage(np.unique(data.perts)),
                                         "readout_genes": kn.coverage(data.genes)}
            self._kn_blob = {"genes": kn.genes, "tensor": kn.tensor.astype("float16"), "mask": kn.mask,
                             "facets": kn.facet_names}
        return {"task": "labels", "learner": self.label_learner.name, "fit_s": round(time.perf_counter() - t0, 2),
                "train_rows": int(len(data.perts)), **log}

    def predict_labels(self, perts: Any, lines: Any) -> tuple[np.ndarray, np.ndarray]:
        """(DE scores, direction scores), each [rows x self.genes]: higher = more likely DE / up."""
        if self.labeler is None:
            raise ConfigError(f"model {self.name} was not trained on a labels dataset. Fix: train it on one (its "
                              "model.pt is from another task)")
        return self.labeler.predict(np.asarray(perts), np.asarray(lines))

    def labels_state(self) -> dict[str, Any]:
        kn = None if self._kn_blob is None else {k: (np.asarray(v) if k not in ("genes", "facets") else list(v))
                                                  for k, v in self._kn_blob.items()}
        return {"labels": {"learner": self.label_learner.name, "state": self.labeler.state(), "knowledge": kn}}

    def set_labels_state(self, state: dict[str, Any]) -> None:
        st = state["labels"]
        if st["learner"] != self.label_learner.name:
            raise ConfigError(f"model {self.name}'s model.pt holds a '{st['learner']}' learner, not its own "
                              f"'{self.label_learner.name}'. Fix: retrain it")
        self._kn_blob = st.get("knowledge")
        if self._kn_blob is not None:
            self._kn_blob = {**self._kn_blob, "tensor": np.asarray(self._kn_blob["tensor"], dtype=np.float32)}
        self.labeler = self.label_learner(self.params, self.seed)
        self.labeler.set_state(st["state"], self._kn_blob)


class LabelsOnly(PredictsLabels):
    """A model of the labels task alone: ``fit`` refuses another task's file; its state is the learner's."""

    tasks: ClassVar[tuple[str, ...]] = ("labels",)


def train_log_record(model: PerturbationModel, fit_log: dict[str, Any], *, hparams: dict[str, Any],
                     wall_s: float) -> dict[str, Any]:
    """``train_log.json``: model, hyperparameters, seed, wall time, device, host, package versions + the fit's log."""
    import platform

    from pertpipe.io import package_versions

    fit_log = dict(fit_log)
    return {"model": model.name, "hparams": dict(hparams), "seed": model.seed, "wall_s": round(wall_s, 3),
            "device": fit_log.pop("device", "cpu"), "host": platform.node(), "versions": package_versions(),
            **fit_log}


def load_model(path: str | os.PathLike, *, expected: str | None = None) -> PerturbationModel:
    """Load any registered model from its ``model.pt`` (``expected``: the registered name it must hold)."""
    return PerturbationModel.load(path, expected=expected)
