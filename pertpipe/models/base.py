"""The model interface and registry.

A model is one registered class with ``fit(train, knowledge, config)``, ``predict(template)``,
``save(path)`` and ``load(path)``; adding a model is one module plus its name in config ``models:`` (and its
hyperparameters under ``model_params:``).

Every model predicts a *shift* in log1p space per (target, cell type); :func:`write_predictions` turns
shifts into cells the way the VCC expects: for each template row, ``n_cells`` training control cells of
the same cell type and batch are drawn (seeded per template row, so every model starts from the same cells) and the shift is added
(clipped at 0). Generative models
override :meth:`PerturbationModel.predict_cells` to make the cells themselves from the drawn controls
(:class:`ControlCells`: their log1p rows, and their counts and ``obsm["spatial"]`` when the model asks).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.data.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.errors import ConfigError, ContractError

PREDICT_BLOCK_ENTRIES = 1 << 23  # cells x genes the writer predicts at a time (~460 cells at 18,080 genes)


MODELS: dict[str, type[PerturbationModel]] = {}


def register_model(name: str) -> Callable[[type[PerturbationModel]], type[PerturbationModel]]:
    """Class decorator: make a model available under ``name`` in config ``models:``."""
    def deco(cls: type[PerturbationModel]) -> type[PerturbationModel]:
        cls.name = name
        MODELS[name] = cls
        return cls
    return deco


def discover_models() -> None:
    """Import every module of the ``pertpipe.models`` package and every ``pertpipe.models`` entry point, so
    their ``@register_model`` runs: a new model is a module (or an installed plugin), no import list to edit."""
    import importlib
    import importlib.metadata
    import pkgutil

    import pertpipe.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
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
    from pertpipe.models.params import check_params

    cls = get_model_class(name)
    hp = dict(hparams or {})
    check_params(name, cls.Params, hp)
    return cls(cls.Params(**hp), seed=seed)


@dataclass
class TrainingSummary:
    """Pseudobulk view of the training split, computed chunk by chunk (enough for the baselines)."""

    genes: list[str]
    target_ct_means: pd.DataFrame  # index (target_gene, cell_type), columns genes; perturbed groups
    target_ct_counts: pd.Series
    control_ct_means: pd.DataFrame  # index cell_type
    control_ctb_counts: pd.Series  # index (cell_type, batch)
    cell_types: list[str] = field(default_factory=list)

    @classmethod
    def from_h5ad(cls, path: str | os.PathLike, *, chunk_size: int = DEFAULT_CHUNK) -> TrainingSummary:
        with H5adReader(path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str)
            genes = [str(g) for g in r.var_names]
            keys = obs["target_gene"] + "\x1f" + obs["cell_type"]
            names, codes = np.unique(keys.to_numpy(), return_inverse=True)
            sums = np.zeros((len(names), len(genes)))
            for start, stop, block in r.iter_chunks(chunk_size):
                c = codes[start:stop]
                ind = sp.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(len(names), len(c)))
                sums += (ind @ block.astype(np.float64)).toarray()
        n = np.bincount(codes, minlength=len(names))
        idx = pd.MultiIndex.from_tuples([tuple(k.split("\x1f")) for k in names], names=["target_gene", "cell_type"])
        means = pd.DataFrame(sums / n[:, None], index=idx, columns=genes)
        counts = pd.Series(n, index=idx)
        is_ctrl = idx.get_level_values(0) == CONTROL_LABEL
        if not is_ctrl.any():
            raise ContractError(path, "obs['target_gene']", "no 'non-targeting' cells in the training split",
                                "stage 1 divides controls between train and val; check split.control_val_fraction")
        ctrl = means[is_ctrl].droplevel(0)
        ctb = obs[obs["target_gene"] == CONTROL_LABEL].groupby(["cell_type", "batch"]).size()
        return cls(genes, means[~is_ctrl], counts[~is_ctrl], ctrl, ctb, sorted(ctrl.index))

    def target_deltas(self) -> pd.DataFrame:
        """Per training target: mean over cell types (cell-weighted) of (target mean - control mean)."""
        rows, names = [], []
        for target, grp in self.target_ct_means.groupby(level=0, sort=True):
            cts = grp.index.get_level_values(1)
            w = self.target_ct_counts.loc[grp.index].to_numpy(dtype=float)
            d = grp.to_numpy() - self.control_ct_means.loc[cts].to_numpy()
            rows.append((d * w[:, None]).sum(0) / w.sum())
            names.append(target)
        return pd.DataFrame(np.vstack(rows) if rows else np.zeros((0, len(self.genes))), index=names,
                            columns=self.genes)


class PerturbationModel(ABC):
    """Base class: subclasses define ``Params`` (a dataclass of hyperparameters) and the four methods."""

    name: ClassVar[str] = "base"

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

    @abstractmethod
    def fit(self, train: str | os.PathLike, knowledge: Any | None = None, config: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        """Train on the training h5ad; returns a training log (loss curves, etc.)."""

    needs_knowledge: ClassVar[bool] = False  # True: fit() gets the facet tensor (knowledge stage)

    @property
    def needs_knowledge_now(self) -> bool:
        """Whether this instance (its hyperparameters) reads the facet tensor; the class flag by default."""
        return self.needs_knowledge

    @abstractmethod
    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        """Predicted mean shift (log1p space, universe gene order) of ``target`` in ``cell_type``."""

    def predict_cell_shifts(self, target: str, cell_type: str, x_ctrl: np.ndarray) -> np.ndarray:
        """Per-cell change for control cells ``x_ctrl`` [n x genes]; default: the same shift for every cell."""
        return np.broadcast_to(np.asarray(self.predict_shift(target, cell_type)), x_ctrl.shape)

    uses_counts: ClassVar[bool] = False  # predict_cells reads the drawn controls' raw counts (when present)
    uses_spatial: ClassVar[bool] = False  # ... and their obsm["spatial"] (when present)
    # predict_cells treats each drawn control cell on its own (the default: control + per-cell shift), so the
    # writer may call it on blocks of a template row's cells; False where a row's cells are generated together.
    cells_independent: ClassVar[bool] = True

    def predict_cells(self, target: str, cell_type: str, batch: str, controls: ControlCells, pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """Predicted log1p cells [len(pick) x genes] of ``target`` started from control rows ``pick``.

        Default: each drawn control cell plus :meth:`predict_cell_shifts`, clipped at 0.
        """
        x = controls.x[pick].toarray().astype(np.float64)
        x += self.predict_cell_shifts(target, cell_type, x)
        return np.clip(x, 0, None, out=x)

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to restore the fitted model (arrays, lists, numbers)."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        ...

    def _summarise(self, train: str | os.PathLike, config: dict[str, Any] | None) -> TrainingSummary:
        """The training pseudobulk summary (chunked), setting the model's gene order."""
        s = TrainingSummary.from_h5ad(train, chunk_size=(config or {}).get("chunk_size", DEFAULT_CHUNK))
        self.genes = s.genes
        return s

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """``model.pt``: a torch-serialised dict {name, params, seed, genes, state}, written atomically."""
        import torch

        from pertpipe.io import atomic_path

        blob = {"name": self.name, "params": asdict(self.params), "seed": self.seed, "genes": self.genes,
                "state": self.state(), "shrinkage": self.shrinkage.state() if self.shrinkage else None}
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PerturbationModel:
        import torch

        blob = torch.load(path, map_location="cpu", weights_only=False)
        model = build_model(blob["name"], blob["params"], seed=blob["seed"])
        model.genes = list(blob["genes"])
        model.set_state(blob["state"])
        if blob.get("shrinkage"):
            from pertpipe.models.shrinkage import Shrinkage

            model.shrinkage = Shrinkage.from_state(blob["shrinkage"])
        return model

    # -- prediction -----------------------------------------------------------------------------------
    def predict(self, template: pd.DataFrame, train: str | os.PathLike, dest: str | os.PathLike, *,
                uns: dict[str, Any] | None = None, chunk_size: int = DEFAULT_CHUNK,
                block_entries: int = PREDICT_BLOCK_ENTRIES) -> dict[str, Any]:
        """Write ``predictions.h5ad`` for ``template`` (rows target_gene, cell_type, batch, n_cells)."""
        return write_predictions(self, template, train, dest, seed=self.seed, uns=uns, chunk_size=chunk_size,
                                 block_entries=block_entries)


def train_log_record(model: PerturbationModel, fit_log: dict[str, Any], *, hparams: dict[str, Any],
                     wall_s: float) -> dict[str, Any]:
    """``train_log.json``: model, hyperparameters, seed, wall time, device, host, package versions + the fit's log."""
    import platform

    from pertpipe.io import package_versions

    fit_log = dict(fit_log)
    return {"model": model.name, "hparams": dict(hparams), "seed": model.seed, "wall_s": round(wall_s, 3),
            "device": fit_log.pop("device", "cpu"), "host": platform.node(), "versions": package_versions(),
            **fit_log}


def load_model(path: str | os.PathLike) -> PerturbationModel:
    """Load any registered model from its ``model.pt``."""
    return PerturbationModel.load(path)


@dataclass
class ControlCells:
    """The training control cells predictions start from: obs (cell_type, batch), log1p X, and optionally raw
    counts (``layers["counts"]``) and ``obsm["spatial"]`` (None where the file has none or nobody asked).

    ``x`` and ``counts`` are row sources indexed by control number: read from the file on demand
    (:class:`~pertpipe.data.h5io.RowReader`, so memory follows the rows drawn, not the control pool) or, in
    tests, in-memory CSR matrices; ``x[pick]`` is a CSR either way.
    """

    obs: pd.DataFrame
    x: Any
    counts: Any = None
    spatial: np.ndarray | None = None

    @classmethod
    def load(cls, train: str | os.PathLike, *, counts: bool = False, spatial: bool = False,
             chunk_size: int = DEFAULT_CHUNK) -> ControlCells:
        from pertpipe.data.h5io import RowReader

        with H5adReader(train) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str)
            mask = (obs["target_gene"] == CONTROL_LABEL).to_numpy()
            has_counts = counts and "counts" in r.layers()
            xy = r.obsm("spatial")[mask] if spatial and "spatial" in r.obsm_keys() else None
        rows = np.flatnonzero(mask)
        x = RowReader(train, rows=rows)
        c = RowReader(train, "counts", rows=rows) if has_counts else None
        return cls(obs[mask].reset_index(drop=True), x, c, xy)


def write_predictions(model: PerturbationModel, template: pd.DataFrame, train: str | os.PathLike,
                      dest: str | os.PathLike, *, seed: int, uns: dict[str, Any] | None = None,
                      chunk_size: int = DEFAULT_CHUNK, block_entries: int = PREDICT_BLOCK_ENTRIES) -> dict[str, Any]:
    """Cells for every template row: sampled training controls (same cell type and batch) + the model's shift.

    Rows are written as they are predicted; a row's cells are predicted ``block_entries // genes`` at a time where
    the model treats cells independently (:attr:`PerturbationModel.cells_independent`), so memory follows the
    block, not the largest perturbation. The control draw is made for the whole row first, so the file is the same
    whatever the block size.
    """
    t0 = time.perf_counter()
    for col in ("target_gene", "cell_type", "batch", "n_cells"):
        if col not in template.columns:
            raise ContractError("template.csv", col, "column missing", "re-run ground_truth")
    controls = ControlCells.load(train, counts=model.uses_counts, spatial=model.uses_spatial, chunk_size=chunk_size)
    ctrl_obs, ctrl_x = controls.obs, controls.x
    genes = model.genes
    block_rows = max(1, int(block_entries) // max(1, len(genes)))
    by_ctb = {k: np.asarray(v) for k, v in ctrl_obs.groupby(["cell_type", "batch"]).indices.items()}
    by_ct = {k: np.asarray(v) for k, v in ctrl_obs.groupby("cell_type").indices.items()}
    rows = template.sort_values(["target_gene", "cell_type", "batch"]).reset_index(drop=True)
    obs_parts = []
    for r in rows.itertuples(index=False):
        obs_parts.append(pd.DataFrame({"target_gene": [r.target_gene] * int(r.n_cells),
                                       "cell_type": [r.cell_type] * int(r.n_cells),
                                       "batch": [r.batch] * int(r.n_cells)}))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = [f"pred{i}" for i in range(len(obs))]
    var = pd.DataFrame(index=pd.Index(genes))
    fallback = 0
    with H5adWriter(dest, obs=obs, var=var, uns=dict(uns or {}), dense=True) as w:  # predicted cells are dense
        for i, r in enumerate(rows.itertuples(index=False)):
            n = int(r.n_cells)
            # Each row's control draw has its own generator, so every model starts from the same control cells
            # (paired comparison) however many random numbers a generative model consumes; the model gets another.
            pick_rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
            rng = np.random.default_rng(np.random.SeedSequence([seed, i, 1]))
            pool = by_ctb.get((r.cell_type, r.batch))
            if pool is None or len(pool) == 0:
                pool = by_ct.get(r.cell_type)
                fallback += 1
            if pool is None or len(pool) == 0:
                pool = np.arange(ctrl_x.shape[0])
            pick = pick_rng.choice(pool, size=n, replace=len(pool) < n)
            control = r.target_gene == CONTROL_LABEL
            step = block_rows if (control or model.cells_independent) else max(n, 1)
            for s in range(0, n, step):
                part = pick[s:s + step]
                base = ctrl_x[part]
                if control:
                    w.append(base.astype(np.float32))
                    continue
                x = model.predict_cells(r.target_gene, r.cell_type, r.batch, controls, part, rng)
                if model.shrinkage is not None:
                    x = model.shrinkage.apply(np.asarray(x, dtype=np.float64), base.toarray().astype(np.float64),
                                              r.cell_type)
                w.append(np.asarray(x, dtype=np.float32))
    return {"cells": int(len(obs)), "targets": int(rows.loc[rows.target_gene != CONTROL_LABEL, "target_gene"].nunique()),
            "control_pool_fallbacks": fallback, "predict_s": round(time.perf_counter() - t0, 3),
            "block_cells": block_rows, "notes": dict(model.notes)}


def attention_table(model: PerturbationModel, template: pd.DataFrame, train: str | os.PathLike, *,
                    seed: int, n_cells: int = 64) -> pd.DataFrame:
    """Facet attention α per (held-out target, cell type), averaged over sampled control cells and heads.

    Empty (with its columns) for models without facet attention.
    """
    cols = ["target_gene", "cell_type", "facet", "weight"]
    if not hasattr(model, "attention"):
        return pd.DataFrame(columns=cols)
    controls = ControlCells.load(train)
    ctrl_obs, ctrl_x = controls.obs, controls.x
    rng = np.random.default_rng(seed)
    rows = []
    pairs = template.loc[template.target_gene != CONTROL_LABEL, ["target_gene", "cell_type"]].drop_duplicates()
    for t, ct in sorted(map(tuple, pairs.to_numpy())):
        pool = np.flatnonzero((ctrl_obs.cell_type == ct).to_numpy())
        if len(pool) == 0:
            pool = np.arange(ctrl_x.shape[0])
        pick = rng.choice(pool, size=min(n_cells, len(pool)), replace=False)
        a = model.attention(t, ctrl_x[pick].toarray().astype(np.float64))
        for name, w in zip(model.facet_names, a):
            rows.append((t, ct, name, float(w)))
    return pd.DataFrame(rows, columns=cols)


def write_signature_predictions(model: PerturbationModel, template: pd.DataFrame, dest: str | os.PathLike, *,
                                uns: dict[str, Any] | None = None) -> dict[str, Any]:
    """Signature datasets (z-scores, no cells to start from): ``n_cells`` rows per template row, each the
    model's predicted signature of (target, cell type)."""
    t0 = time.perf_counter()
    if not getattr(model, "supports_signatures", False):
        raise ConfigError(f"model '{model.name}' predicts log1p cells, not signatures. Fix: use a model that "
                          "supports signature data (context_mean, ctxfusion)")
    rows = template.sort_values(["target_gene", "cell_type", "batch"]).reset_index(drop=True)
    rep = rows.loc[rows.index.repeat(rows["n_cells"].astype(int)), ["target_gene", "cell_type", "batch"]]
    obs = rep.reset_index(drop=True).astype(str)
    obs.index = [f"pred{i}" for i in range(len(obs))]
    cache: dict[tuple[str, str], np.ndarray] = {}
    with H5adWriter(dest, obs=obs, var=pd.DataFrame(index=pd.Index(model.genes)), uns=dict(uns or {}),
                    dense=True) as w:
        for r in rows.itertuples(index=False):
            key = (r.target_gene, r.cell_type)
            if key not in cache:
                cache[key] = np.asarray(model.predict_shift(*key), dtype=np.float32)
            w.append(sp.csr_matrix(np.repeat(cache[key][None, :], int(r.n_cells), axis=0)))
    return {"cells": int(len(obs)), "targets": int(rows["target_gene"].nunique()), "signatures": True,
            "predict_s": round(time.perf_counter() - t0, 3), "notes": dict(model.notes)}


def predict_to_file(model: PerturbationModel, template: pd.DataFrame, train: str | os.PathLike,
                    dest: str | os.PathLike, *, seed: int, uns: dict[str, Any] | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> tuple[dict[str, Any], pd.DataFrame]:
    """The predict rule's work: cells (single-cell data) or signatures (z-score data such as L1000, decided by
    the training file's stage-1 record), and the facet attention table (empty for signatures and for models
    without attention). Returns (summary, attention)."""
    from pertpipe.data.zscores import value_kind

    if value_kind(train) == "zscore":
        return write_signature_predictions(model, template, dest, uns=uns), attention_table(
            model, template.iloc[:0], train, seed=seed)
    summary = model.predict(template, train, dest, uns=uns, chunk_size=chunk_size)
    return summary, attention_table(model, template, train, seed=seed)
