"""Train/validation splits in which held-out perturbations never reach training.

Strategies (``stage1.split.strategy``):

* ``vcc`` — the validation targets (and their ``n_cells``) come from a VCC-style csv
  (``target_gene,n_cells[,median_umi_per_cell]``); every other perturbation trains.
* ``random_unseen`` — a seeded ``fraction`` of the genes perturbed alone is held out; every condition
  containing a held-out gene (its single and its doubles) goes to validation.
* ``combo`` — Norman-style doubles: ``single_fraction`` of single genes is held out with their singles;
  doubles go to validation as ``seen0``/``seen1`` when they contain held-out genes, and a seeded
  ``combo_fraction`` of the remaining doubles is held out as ``seen2`` (both singles trained).
* ``cell_line_holdout`` — in one cell type (``holdout_cell_type``, or one drawn by the seed) a
  ``fraction`` of its perturbations is held out; other cell types keep them in training. The held-out
  unit is (target, cell type); ``fraction: 1`` holds out every perturbation of that context
  (leave-one-context-out: its controls still divide between train and val).

Controls (``non-targeting``) are divided in every (cell type, batch) stratum: ``control_val_fraction``
to validation (``cell_line_holdout``: only the held-out cell type's controls; the others all train, since
cell-eval compares a perturbation with every control in the truth). The leakage check runs on the result and raises :class:`LeakageError`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe import COMBO_SEP, CONTROL_LABEL, perturbation_genes
from pertpipe.core.h5io import DEFAULT_CHUNK, H5adReader, H5adWriter
from pertpipe.errors import ConfigError, ContractError, LeakageError

log = logging.getLogger(__name__)

STRATEGIES = ("vcc", "random_unseen", "combo", "cell_line_holdout")
TRAIN, VAL, DROP = "train", "val", "drop"


def heldout_unit(strategy: str) -> str:
    """What a held-out perturbation is, written into the splits' ``uns['pertpipe']['heldout_unit']``: ``group``
    (one (target, cell type); its other cell types train) for ``cell_line_holdout``, else ``target`` (the target is
    unseen in every cell type). Models that cross-fit on training data mirror it (:mod:`pertpipe.models.prior`)."""
    return "group" if strategy == "cell_line_holdout" else "target"


def read_heldout_unit(path: str | os.PathLike) -> str | None:
    """The split's held-out unit recorded in a training file (None for files written before it was recorded)."""
    from pertpipe.core.h5io import read_uns

    unit = (read_uns(path).get("pertpipe") or {}).get("heldout_unit")
    return str(unit) if unit in ("target", "group") else None


@dataclass
class SplitResult:
    assignment: np.ndarray  # per cell: "train", "val" or "drop"
    val_targets: list[str]
    heldout_genes: list[str] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)  # val target -> category
    heldout_cell_type: str | None = None
    n_cells_requested: dict[str, int] = field(default_factory=dict)  # vcc: target -> n_cells
    dropped_small: dict[str, int] = field(default_factory=dict)  # held-out target -> its (too few) cells
    submission: bool = False  # vcc submission: the targets to predict have no cells here (no truth, no scores)


def check_no_leakage(train_obs: pd.DataFrame, val_obs: pd.DataFrame, *, heldout_genes: list[str] | tuple = (),
                     by_cell_type: bool = False) -> None:
    """Raise :class:`LeakageError` when a held-out perturbation (or held-out gene) occurs in training.

    The unit is the perturbation label, or (label, cell type) with ``by_cell_type``; ``heldout_genes``
    additionally forbids any training label that contains one of those genes.
    """
    def units(o: pd.DataFrame) -> set:
        o = o[o["target_gene"] != CONTROL_LABEL]
        if by_cell_type:
            return set(zip(o["target_gene"].astype(str), o["cell_type"].astype(str)))
        return set(o["target_gene"].astype(str))

    both = units(train_obs) & units(val_obs)
    if both:
        raise LeakageError(f"{len(both)} held-out perturbation(s) also in train: {sorted(both)[:10]}. "
                           "Fix: this is a bug in the split; report it with the config used")
    hg = set(heldout_genes)
    if hg:
        bad = sorted({t for t in train_obs["target_gene"].astype(str).unique() if hg & set(perturbation_genes(t))})
        if bad:
            raise LeakageError(f"train conditions contain held-out genes: {bad[:10]}. Fix: this is a bug in the "
                               "split; report it with the config used")


def _split_controls(obs: pd.DataFrame, assignment: np.ndarray, fraction: float, rng: np.random.Generator,
                    *, only_cell_type: str | None = None) -> None:
    """Controls to validation by ``fraction`` in every (cell type, batch) stratum; with ``only_cell_type`` only
    that cell type's controls are divided and every other control trains."""
    ctrl = (obs["target_gene"] == CONTROL_LABEL).to_numpy()
    if only_cell_type is not None:
        ctrl &= (obs["cell_type"].astype(str) == only_cell_type).to_numpy()
    strata = obs.loc[ctrl, ["cell_type", "batch"]].astype(str).agg("|".join, axis=1)
    idx = np.flatnonzero(ctrl)
    if len(idx) == 0:  # signature data (L1000 level 5) carry no controls
        return
    for s in sorted(strata.unique()):
        members = idx[(strata == s).to_numpy()]
        n_val = int(round(fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        chosen = rng.choice(members, size=n_val, replace=False) if n_val else np.array([], dtype=int)
        assignment[members] = TRAIN
        assignment[chosen] = VAL


def read_val_counts(path: str | os.PathLike) -> pd.DataFrame:
    """A VCC-style ``target_gene,n_cells`` csv."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"{path}: cannot read the validation target list ({exc}). "
                          "Fix: give a csv with columns target_gene,n_cells") from exc
    for col in ("target_gene", "n_cells"):
        if col not in df.columns:
            raise ContractError(path, col, f"column missing (columns: {[str(c) for c in df.columns]})",
                                "give a csv with header target_gene,n_cells")
    if df["target_gene"].duplicated().any():
        raise ContractError(path, "target_gene", "duplicate targets", "list each validation target once")
    return df


def make_split(obs: pd.DataFrame, *, strategy: str, seed: int, fraction: float = 0.25,
               control_val_fraction: float = 0.3, single_fraction: float = 0.2, combo_fraction: float = 0.3,
               holdout_cell_type: str | None = None, val_counts: pd.DataFrame | None = None,
               val_counts_path: str = "<val_counts>", min_cells_per_target: int = 1,
               small_targets: str = "drop", submission: bool = False) -> SplitResult:
    """Assign every cell of ``obs`` to train, val or drop following ``strategy`` (seeded).

    A held-out perturbation with fewer than ``min_cells_per_target`` cells cannot be scored with a real DE
    test: ``small_targets: drop`` moves its cells to ``drop`` (never to train: it stays held out) and records
    it in ``dropped_small``; ``error`` stops with its name.

    ``submission`` (strategy ``vcc`` only): the VCC setting, where the validation targets have no cells in the
    training file. Every perturbed cell trains (a validation target that does occur is dropped, never trained
    on), the controls are divided as usual, and the template asks for each target's ``n_cells`` spread over the
    held-out controls' (cell type, batch) strata; the truth holds controls only, so nothing is scored.
    """
    if submission:
        if strategy != "vcc" or val_counts is None:
            raise ConfigError("stage1.split.submission needs strategy 'vcc' and val_counts (the targets to predict)")
        return _submission(obs, seed=seed, control_val_fraction=control_val_fraction, val_counts=val_counts)
    result = _assign(obs, strategy=strategy, seed=seed, fraction=fraction, control_val_fraction=control_val_fraction,
                     single_fraction=single_fraction, combo_fraction=combo_fraction,
                     holdout_cell_type=holdout_cell_type, val_counts=val_counts, val_counts_path=val_counts_path)
    return _drop_small_targets(obs, result, min_cells_per_target, small_targets)


def _submission(obs: pd.DataFrame, *, seed: int, control_val_fraction: float, val_counts: pd.DataFrame) -> SplitResult:
    if not 0 < control_val_fraction < 1:
        raise ConfigError(f"stage1.split.control_val_fraction is {control_val_fraction}; a submission needs held-out "
                          "controls for its control block. Fix: use a number in (0, 1), e.g. 0.1")
    rng = np.random.default_rng(seed)
    labels = obs["target_gene"].astype(str).to_numpy()
    wanted = [str(t) for t in val_counts["target_gene"] if str(t) != CONTROL_LABEL]
    assignment = np.full(len(obs), TRAIN, dtype=object)
    assignment[np.isin(labels, wanted)] = DROP  # present anyway: never trained on
    _split_controls(obs, assignment, control_val_fraction, rng)
    if not (assignment == VAL).any():
        raise ContractError("<obs>", "target_gene", f"no '{CONTROL_LABEL}' cells to hold out for the submission's "
                            "control block", "a VCC submission needs control cells in the training file")
    n_req = {str(t): int(n) for t, n in zip(val_counts["target_gene"], val_counts["n_cells"]) if str(t) in wanted}
    return SplitResult(assignment, sorted(wanted), sorted({g for t in wanted for g in perturbation_genes(t)}),
                       {t: "submission" for t in wanted}, None, n_req, submission=True)


def _drop_small_targets(obs: pd.DataFrame, result: SplitResult, min_cells: int, policy: str) -> SplitResult:
    if policy not in ("drop", "error"):
        raise ConfigError(f"stage1.split.small_targets is '{policy}'. Fix: use drop or error")
    labels = obs["target_gene"].astype(str).to_numpy()
    is_val = result.assignment == VAL
    sizes = pd.Series(labels[is_val]).value_counts()
    small = {t: int(sizes.get(t, 0)) for t in result.val_targets if sizes.get(t, 0) < min_cells}
    if not small:
        return result
    if policy == "error":
        raise ConfigError(f"{len(small)} held-out perturbation(s) have fewer than stage1.split.min_cells_per_target "
                          f"= {min_cells} cells: {dict(list(small.items())[:10])}. Fix: lower min_cells_per_target, "
                          "or set stage1.split.small_targets: drop to leave them out of validation")
    result.assignment[is_val & np.isin(labels, list(small))] = DROP
    result.val_targets = [t for t in result.val_targets if t not in small]
    for t in small:
        result.categories.pop(t, None)
    result.dropped_small = small
    if not result.val_targets:
        raise ConfigError(f"every held-out perturbation has fewer than stage1.split.min_cells_per_target = "
                          f"{min_cells} cells ({dict(list(small.items())[:10])}). Fix: lower min_cells_per_target "
                          "or hold out more perturbations (stage1.split.fraction)")
    log.warning("dropped %d held-out perturbation(s) with < %d cells: %s", len(small), min_cells, small)
    return result


def _assign(obs: pd.DataFrame, *, strategy: str, seed: int, fraction: float, control_val_fraction: float,
            single_fraction: float, combo_fraction: float, holdout_cell_type: str | None,
            val_counts: pd.DataFrame | None, val_counts_path: str) -> SplitResult:
    if strategy not in STRATEGIES:
        raise ConfigError(f"stage1.split.strategy is '{strategy}'. Fix: use one of {list(STRATEGIES)}")
    for name, val in (("fraction", fraction), ("control_val_fraction", control_val_fraction),
                      ("single_fraction", single_fraction), ("combo_fraction", combo_fraction)):
        whole = name == "fraction" and strategy == "cell_line_holdout"  # 1 = leave the whole context out
        if not (0 <= val <= 1 if whole else 0 <= val < 1):
            raise ConfigError(f"stage1.split.{name} is {val}. Fix: use a number in [0, 1)"
                              + (" (1 only with strategy cell_line_holdout)" if name == "fraction" else ""))
    rng = np.random.default_rng(seed)
    labels = obs["target_gene"].astype(str).to_numpy()
    perts = sorted(set(labels) - {CONTROL_LABEL})
    if not perts:
        raise ContractError("<obs>", "target_gene", "no perturbed cells, only controls", "check the input data")
    singles = [t for t in perts if COMBO_SEP not in t]
    doubles = [t for t in perts if COMBO_SEP in t]
    assignment = np.full(len(obs), TRAIN, dtype=object)
    categories: dict[str, str] = {}
    heldout_genes: list[str] = []
    n_req: dict[str, int] = {}
    held_ct: str | None = None

    def hold_genes(genes: list[str]) -> set[str]:
        g = set(genes)
        val = {t for t in perts if g & set(perturbation_genes(t))}
        for t in val:
            categories[t] = "single_unseen" if COMBO_SEP not in t else \
                f"seen{sum(x not in g and x in singles for x in perturbation_genes(t))}"
        return val

    if strategy == "vcc":
        if val_counts is None:
            raise ConfigError("stage1.split.strategy 'vcc' needs stage1.split.val_counts (a target_gene,n_cells csv)")
        wanted = [str(t) for t in val_counts["target_gene"]]
        absent = [t for t in wanted if t not in set(perts)]
        if absent:
            raise ContractError(val_counts_path, "target_gene", f"{len(absent)} validation target(s) absent from the "
                                f"data: {absent[:10]}", "remove them from the list or use a dataset that has them "
                                "(VCC's own validation targets are not in its training file: split the 150 training "
                                "targets with random_unseen instead)")
        heldout_genes = sorted({g for t in wanted for g in perturbation_genes(t)})
        val_set = hold_genes(heldout_genes) | set(wanted)
        n_req = {str(t): int(n) for t, n in zip(val_counts["target_gene"], val_counts["n_cells"])}
    elif strategy == "random_unseen":
        pool = sorted({g for t in (singles or perts) for g in perturbation_genes(t)})
        n = min(len(pool) - 1, max(1, int(round(fraction * len(pool))))) if len(pool) > 1 else 0
        if n == 0:
            raise ContractError("<obs>", "target_gene", f"only {len(pool)} perturbed gene(s): nothing left to train",
                                "use a dataset with more perturbations")
        heldout_genes = sorted(rng.choice(pool, size=n, replace=False).tolist())
        val_set = hold_genes(heldout_genes)
    elif strategy == "combo":
        if not doubles:
            raise ContractError("<obs>", "target_gene", "strategy 'combo' needs double perturbations ('A+B'); "
                                "none found", "use random_unseen for single-perturbation data")
        single_genes = sorted(singles)
        n = int(round(single_fraction * len(single_genes)))
        heldout_genes = sorted(rng.choice(single_genes, size=n, replace=False).tolist()) if n else []
        val_set = hold_genes(heldout_genes)
        rest = [d for d in doubles if d not in val_set and all(g in singles for g in perturbation_genes(d))]
        n2 = int(round(combo_fraction * len(rest)))
        for d in (rng.choice(rest, size=n2, replace=False).tolist() if n2 else []):
            val_set.add(d)
            categories[d] = "seen2"
    else:  # cell_line_holdout
        cts = sorted(obs["cell_type"].astype(str).unique())
        if len(cts) < 2:
            raise ContractError("<obs>", "cell_type", f"one cell type only ({cts}); cell_line_holdout needs two or more",
                                "use random_unseen")
        if holdout_cell_type is None:
            held_ct = str(rng.choice(cts))
        elif holdout_cell_type not in cts:
            raise ConfigError(f"stage1.split.holdout_cell_type '{holdout_cell_type}' is not in the data. "
                              f"Fix: use one of {cts}")
        else:
            held_ct = holdout_cell_type
        in_ct = obs["cell_type"].astype(str).to_numpy() == held_ct
        pool = sorted(set(labels[in_ct]) - {CONTROL_LABEL})
        n = max(1, int(round(fraction * len(pool))))
        val_set = set(rng.choice(pool, size=n, replace=False).tolist())
        for t in val_set:
            categories[t] = f"unseen_in_{held_ct}"
        is_val = np.isin(labels, sorted(val_set)) & in_ct
        assignment[is_val] = VAL
        # cell-eval tests each perturbation against every control of the truth: controls of the other lines
        # there would make the lines' differences the "response" (a no-change model then wins DES), so only the
        # held-out line's controls are divided; the others all train.
        _split_controls(obs, assignment, control_val_fraction, rng, only_cell_type=held_ct)
        return SplitResult(assignment, sorted(val_set), [], categories, held_ct, {})

    is_val = np.isin(labels, sorted(val_set))
    assignment[is_val] = VAL
    _split_controls(obs, assignment, control_val_fraction, rng)
    for t in val_set:
        categories.setdefault(t, "unseen")
    return SplitResult(assignment, sorted(val_set), heldout_genes, categories, held_ct, n_req)


def min_cells_for(path: str | os.PathLike, configured: int) -> int:
    """``min_cells_per_target`` for the file at ``path``: as configured for cells; 1 for signature data, which
    are scored one signature at a time (no DE test over cells)."""
    from pertpipe.data.contracts import contract_of_file

    return 1 if contract_of_file(path).scored_per_row else configured


def template_table(val_obs: pd.DataFrame, n_cells_requested: dict[str, int] | None = None) -> pd.DataFrame:
    """Rows (target_gene, cell_type, batch, n_cells): how many cells to predict where.

    By default the observed validation cells; with ``n_cells_requested`` (vcc), each target's total is
    rescaled to the requested number, keeping its cell-type/batch proportions (largest remainder).
    """
    t = (val_obs.groupby(["target_gene", "cell_type", "batch"], observed=True).size()
         .rename("n_cells").reset_index())
    t = t.astype({"target_gene": str, "cell_type": str, "batch": str})
    absent = [g for g in (n_cells_requested or {}) if g not in set(t["target_gene"])]
    if absent:  # a submission: targets without cells take the held-out controls' (cell type, batch) strata
        strata = t[t["target_gene"] == CONTROL_LABEL]
        if strata.empty:
            raise ContractError("<val>", "target_gene", "no held-out controls to place the requested targets in",
                                "hold out controls (stage1.split.control_val_fraction > 0)")
        t = pd.concat([t, *[strata.assign(target_gene=g) for g in absent]], ignore_index=True)
    if n_cells_requested:
        parts = []
        for target, grp in t.groupby("target_gene", sort=False):
            want = n_cells_requested.get(target)
            if want is None:
                parts.append(grp)
                continue
            share = grp["n_cells"].to_numpy() / grp["n_cells"].sum() * want
            base = np.floor(share).astype(int)
            base[np.argsort(-(share - base))[: want - base.sum()]] += 1
            parts.append(grp.assign(n_cells=base))
        t = pd.concat(parts, ignore_index=True)
    return t.sort_values(["target_gene", "cell_type", "batch"]).reset_index(drop=True)


def write_split(src: str | os.PathLike, train_path: str | os.PathLike, val_path: str | os.PathLike,
                result: SplitResult, *, chunk_size: int = DEFAULT_CHUNK, uns: dict[str, Any] | None = None) -> None:
    """Stream the cells of ``src`` into ``train_path`` and ``val_path`` by ``result.assignment``."""
    with H5adReader(src) as reader:
        obs = reader.obs
        tr, va = result.assignment == TRAIN, result.assignment == VAL
        layers = {"counts": np.int32} if "counts" in reader.layers() else {}
        meta = dict(uns or {})
        obsm = reader.carried_obsm()
        with H5adWriter(train_path, obs=obs[tr], var=reader.var, uns=meta, layers=layers,
                        obsm={k: v[tr] for k, v in obsm.items()}) as wt, \
                H5adWriter(val_path, obs=obs[va], var=reader.var, uns=meta, layers=layers,
                           obsm={k: v[va] for k, v in obsm.items()}) as wv:
            for start, stop, block in reader.iter_chunks(chunk_size):
                counts = reader.read_rows(start, stop, "counts") if layers else None
                for mask, w in ((tr[start:stop], wt), (va[start:stop], wv)):
                    rows = np.flatnonzero(mask)
                    if layers:
                        w.append(block[rows], counts=counts[rows])
                    else:
                        w.append(block[rows])


def split_summary(obs: pd.DataFrame, result: SplitResult, *, strategy: str, seed: int,
                  params: dict[str, Any]) -> dict[str, Any]:
    """The content of ``split.json``: what was held out, cell counts, the prediction template and a split id.

    The ``split_id`` hashes the cell assignment, so a truth or prediction file from another split is caught.
    """
    from pertpipe.io import config_hash

    a = result.assignment
    ctrl = (obs["target_gene"] == CONTROL_LABEL).to_numpy()
    val_obs = obs[a == VAL]
    template = template_table(val_obs, result.n_cells_requested)
    return {
        "strategy": strategy, "seed": seed, "params": dict(params),
        "val_targets": result.val_targets, "heldout_genes": result.heldout_genes,
        "categories": dict(sorted(result.categories.items())), "holdout_cell_type": result.heldout_cell_type,
        "n_cells": {s: int((a == s).sum()) for s in (TRAIN, VAL, DROP)},
        "n_controls": {s: int(((a == s) & ctrl).sum()) for s in (TRAIN, VAL)},
        "n_cells_requested": result.n_cells_requested,
        "dropped_small_targets": result.dropped_small,
        "submission": result.submission,
        "template": template.to_dict(orient="records"),
        "split_id": config_hash({"cells": list(obs.index[a == VAL]), "train": int((a == TRAIN).sum()),
                                 "val_targets": result.val_targets}),
    }


def write_template_files(template: list[dict[str, Any]], *, template_path: str | os.PathLike,
                         pert_counts_path: str | os.PathLike) -> None:
    """``template.csv`` (target_gene, cell_type, batch, n_cells) and the VCC-style ``pert_counts.csv``."""
    from pertpipe.io import atomic_path

    table = pd.DataFrame(template, columns=["target_gene", "cell_type", "batch", "n_cells"])
    with atomic_path(template_path) as tmp:
        table.to_csv(tmp, index=False)
    per_target = table.groupby("target_gene", sort=True)["n_cells"].sum().reset_index()
    with atomic_path(pert_counts_path) as tmp:
        per_target.to_csv(tmp, index=False)
