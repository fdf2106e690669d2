"""The embedded ``demo`` dataset: a simulated CRISPRi screen made offline and deterministically from a seed.

Generative model
----------------
* Genes belong to one or two of eight **gene programs**, one per functional facet of
  ``resources/facets.yaml`` (transcription, cell cycle, cell death, metabolism, immune, signalling,
  motility, transport). A gene's GO annotations (written to the demo annotation files) are terms under
  its programs' GO roots, so the annotation of a target says which programs it can move.
* Each **cell type** runs its own set of programs (activity matrix ``A[cell_type, program]``); a sparse
  program-to-program **regulatory network** ``B`` propagates shifts: ``shift = (I - B)^-1 direct``.
* Knocking down target ``g`` (expression x ``knockdown``) lowers the activity of the programs it belongs to,
  *gated by the cell type*: a program that is silent in a cell type barely responds there. This is the context
  dependence the facet models are built for. Some targets have no effect beyond their own knockdown.
  Doubles add their singles' shifts plus an interaction term. Every effective knockdown also slows the
  cell-cycle programme a little (``common_effect``), the shared response real screens show.
* Expression: ``log rate_j = base_j + sum_p L[j, p] * (A[c, p] + shift_p + noise) + batch_j``;
  counts are negative binomial (gamma-Poisson) around ``library_size x softmax(log rate)`` with
  log-normal library sizes.

Alongside the counts the simulator writes ``universe.txt`` (canonical symbols, a few never measured),
gene annotation files in NCBI/GO formats (``Homo_sapiens.gene_info.gz`` with synonyms, ``gene2go.gz``,
``go-basic.obo``) and ``simulation.json`` (the ground-truth parameters). The raw matrix names a few genes
by an old alias (rescued by alignment) and measures a few genes outside the universe (dropped).
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL
from pertpipe.core.h5io import H5adWriter
from pertpipe.io import atomic_path, write_json, write_text

# (prefix, name, GO root id, root name, root definition) for the eight programs.
PROGRAMS: list[tuple[str, str, str, str, str]] = [
    ("TRX", "transcriptional regulation", "GO:0006355", "regulation of DNA-templated transcription",
     "Any process that modulates the frequency, rate or extent of cellular DNA-templated transcription."),
    ("CCY", "cell cycle and proliferation", "GO:0007049", "cell cycle",
     "The progression of biochemical and morphological phases and events that occur in a cell during successive "
     "cell replication or nuclear replication events."),
    ("CDS", "cell death and survival", "GO:0008219", "cell death",
     "Any biological process that results in permanent cessation of all vital functions of a cell."),
    ("MET", "metabolic process", "GO:0008152", "metabolic process",
     "The chemical reactions and pathways, including anabolism and catabolism, by which living organisms "
     "transform chemical substances."),
    ("IMM", "immune response", "GO:0006955", "immune response",
     "Any immune system process that functions in the calibrated response of an organism to a potential "
     "internal or invasive threat."),
    ("SIG", "signal transduction", "GO:0007165", "signal transduction",
     "The cellular process in which a signal is conveyed to trigger a change in the activity or state of a cell."),
    ("MOT", "cell motility and adhesion", "GO:0048870", "cell motility",
     "Any process involved in the controlled self-propelled movement of a cell that results in translocation "
     "of the cell from one place to another."),
    ("TRN", "transport and localisation", "GO:0006810", "transport",
     "The directed movement of substances into, out of or within a cell, or between cells, by means of some "
     "agent such as a transporter, pore or motor protein."),
]
# Secondary facet roots of resources/facets.yaml (real GO ids), so the demo ontology carries every root.
_EXTRA_ROOTS = [
    ("GO:0051301", "cell division", "The process resulting in division and partitioning of components of a cell."),
    ("GO:0002376", "immune system process", "Any process involved in the development or functioning of the "
     "immune system."),
    ("GO:0007155", "cell adhesion", "The attachment of a cell to another cell or to an underlying substrate."),
    ("GO:0051179", "localization", "Any process in which a cell, a substance, or a cellular entity is "
     "transported to, or maintained in, a specific location."),
]
_CHILD_TERMS = [
    ("positive regulation of {x} pathway", "Any process that activates or increases the {x} pathway.", "is_a"),
    ("negative regulation of {x} pathway", "Any process that stops, prevents or reduces the {x} pathway.", "is_a"),
    ("{x} complex assembly", "The aggregation and bonding together of the components of a {x} complex.", "part_of"),
    ("regulation of {x} signalling node", "Any process that modulates a node of the {x} programme.", "regulates"),
]


@dataclass(frozen=True)
class DemoParams:
    """Size and effect settings of the demo (config ``demo:``); defaults run the pipeline in minutes."""

    n_genes: int = 1000
    n_single_targets: int = 36
    n_double_targets: int = 6
    cells_per_target: int = 50  # per cell type
    n_control_cells: int = 400  # per cell type
    cell_types: tuple[str, ...] = ("typeA", "typeB")
    batches: tuple[str, ...] = ("batch1", "batch2")
    no_effect_fraction: float = 0.15
    knockdown: float = 0.15
    effect_strength: float = 1.2
    common_effect: float = 0.3
    library_size: float = 4000.0
    dispersion: float = 8.0
    alias_fraction: float = 0.02
    extra_gene_fraction: float = 0.02
    missing_gene_fraction: float = 0.02
    library_sd: float = 0.35  # sd of log library size
    base_sd: float = 1.0  # sd of the genes' log base rates: wider = a longer tail of rarely detected genes
    realism: str = "none"  # none | sparse | typical: presets below (fields left at their defaults take them)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> DemoParams:
        cfg = dict(cfg or {})
        for key in ("cell_types", "batches"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        realism = cfg.get("realism", "none")
        if realism not in REALISM:
            raise ValueError(f"demo.realism is '{realism}'. Fix: use one of {sorted(REALISM)}")
        defaults = cls()
        for key, value in REALISM[realism].items():
            if cfg.get(key, getattr(defaults, key)) == getattr(defaults, key):
                cfg[key] = value
        return cls(**cfg)


# Count regimes of real 10x-like screens (see count_statistics and benchmarks/bench_real.py, which prints the
# same figures for the real files): library size, its spread, the spread of gene base rates (-> detected genes,
# zero fraction) and NB overdispersion. `sparse` matches a CROP-seq panel with ~1-3 % non-zero entries and tens of
# detected genes per cell over ~2,000 genes; `typical` ~10-20 % non-zero (Papalexi 2021 over its 299 genes: 22 %).
REALISM: dict[str, dict[str, Any]] = {
    "none": {},
    "sparse": {"n_genes": 2000, "library_size": 50.0, "library_sd": 0.55, "base_sd": 1.8, "dispersion": 2.5},
    "typical": {"n_genes": 2000, "library_size": 1000.0, "library_sd": 0.45, "base_sd": 1.8, "dispersion": 4.0},
}


def count_statistics(counts: sp.spmatrix) -> dict[str, float]:
    """What the realism presets are fitted to: non-zero fraction, UMIs and detected genes per cell (median,
    quartiles), and the log-log slope of per-gene variance on mean (1 = Poisson, ~2 = strongly overdispersed)."""
    m = sp.csr_matrix(counts, dtype=np.float64)
    n, g = m.shape
    lib = np.asarray(m.sum(1)).ravel()
    det = np.diff(m.indptr)
    mean = np.asarray(m.mean(0)).ravel()
    var = np.asarray(m.multiply(m).mean(0)).ravel() - mean ** 2
    ok = (mean > 0) & (var > 0)
    slope = float(np.polyfit(np.log(mean[ok]), np.log(var[ok]), 1)[0]) if ok.sum() > 2 else float("nan")
    return {"cells": n, "genes": g, "nonzero_fraction": float(m.nnz / max(1, n * g)),
            "umi_median": float(np.median(lib)), "umi_q25": float(np.quantile(lib, .25)),
            "umi_q75": float(np.quantile(lib, .75)), "detected_median": float(np.median(det)),
            "genes_detected_anywhere": float((mean > 0).mean()), "mean_var_loglog_slope": slope}


def _go_id(program: int, child: int) -> str:
    return f"GO:99{program:02d}{child:03d}"


def write_obo(path: str | os.PathLike) -> None:
    """The demo ontology: the eight real facet roots (and their real parents) plus program child terms."""
    out = io.StringIO()
    out.write("format-version: 1.2\ndata-version: pertpipe-demo\nontology: go\n\n")
    out.write('[Term]\nid: GO:0008150\nname: biological_process\nnamespace: biological_process\n'
              'def: "A biological process is the execution of a genetically-encoded biological module." []\n\n')
    for root, rname, rdef in _EXTRA_ROOTS:
        out.write(f"[Term]\nid: {root}\nname: {rname}\nnamespace: biological_process\ndef: \"{rdef}\" []\n"
                  f"is_a: GO:0008150 ! biological_process\n\n")
    for i, (_, pname, root, rname, rdef) in enumerate(PROGRAMS):
        out.write(f"[Term]\nid: {root}\nname: {rname}\nnamespace: biological_process\ndef: \"{rdef}\" []\n"
                  f"is_a: GO:0008150 ! biological_process\n\n")
        for j, (tname, tdef, rel) in enumerate(_CHILD_TERMS):
            name, definition = tname.format(x=pname), tdef.format(x=pname)
            line = f"is_a: {root} ! {rname}" if rel == "is_a" else f"relationship: {rel} {root} ! {rname}"
            out.write(f"[Term]\nid: {_go_id(i, j)}\nname: {name}\nnamespace: biological_process\n"
                      f"def: \"{definition}\" []\n{line}\n\n")
    write_text(out.getvalue(), path)


def _write_gz(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.encode())


@dataclass
class _Genes:
    """Genes, their programmes and the cell types' programme activity (the simulator's fixed biology)."""

    symbols: np.ndarray
    member: np.ndarray  # [G, programmes] bool
    loadings: np.ndarray  # [G, programmes]
    base: np.ndarray
    batch_eff: np.ndarray
    activity: np.ndarray  # [cell types, programmes]
    gate: np.ndarray
    propagate: np.ndarray  # (I - B)^-1 of the programme network


@dataclass
class _Targets:
    singles: np.ndarray
    no_effect: set
    direct: dict  # gene -> direct programme shift
    doubles: list  # (gene, gene)


def _genes_and_programs(rng: np.random.Generator, p: DemoParams) -> _Genes:
    n_prog, G = len(PROGRAMS), p.n_genes
    primary = rng.integers(0, n_prog, size=G)
    member = np.zeros((G, n_prog), dtype=bool)
    member[np.arange(G), primary] = True
    second = rng.random(G) < 0.3
    member[np.flatnonzero(second), rng.integers(0, n_prog, size=second.sum())] = True
    counters = {i: 0 for i in range(n_prog)}
    symbols = []
    for g in range(G):
        counters[primary[g]] += 1
        symbols.append(f"{PROGRAMS[primary[g]][0]}{counters[primary[g]]}")
    loadings = np.where(member, rng.normal(0.9, 0.3, size=(G, n_prog)) * rng.choice([-1, 1], size=(G, n_prog)), 0.0)
    base = rng.normal(0.0, p.base_sd, size=G)
    batch_eff = rng.normal(0.0, 0.1, size=(len(p.batches), G))
    # Cell types run different programs; silent programs barely respond to knockdowns.
    activity = np.full((len(p.cell_types), n_prog), 0.2)
    for c in range(len(p.cell_types)):
        on = rng.choice(n_prog, size=n_prog // 2, replace=False)
        activity[c, on] = rng.uniform(0.8, 1.5, size=on.size)
    gate = np.where(activity >= 0.8, 1.0, 0.1)
    # Sparse program regulatory network (a few edges), propagated in closed form.
    B = np.zeros((n_prog, n_prog))
    for _ in range(n_prog // 2):
        a, b = rng.choice(n_prog, size=2, replace=False)
        B[b, a] = rng.uniform(0.3, 0.6) * rng.choice([-1, 1])
    return _Genes(np.array(symbols), member, loadings, base, batch_eff, activity, gate,
                  np.linalg.inv(np.eye(n_prog) - B))


def _targets(rng: np.random.Generator, p: DemoParams, genes: _Genes) -> _Targets:
    """Annotated regulators of their programmes; a few without effect; doubles among the effective ones."""
    n_prog = len(PROGRAMS)
    singles = rng.permutation(p.n_genes)[: p.n_single_targets]
    # a programme's regulators are co-expressed with it: positive loadings on their programmes
    genes.loadings[singles] = np.abs(genes.loadings[singles])
    no_effect = set(rng.choice(singles, size=int(round(p.no_effect_fraction * len(singles))), replace=False))
    direct = {}
    for g in singles:
        # CRISPRi of a programme member lowers that programme's activity (its genes load +/- on it)
        w = np.where(genes.member[g], rng.uniform(0.6, 1.0, size=n_prog), 0.0)
        direct[g] = np.zeros(n_prog) if g in no_effect else -p.effect_strength * w
    doubles = []
    pool = [g for g in singles if g not in no_effect]
    for _ in range(p.n_double_targets):
        a, b = rng.choice(pool, size=2, replace=False)
        doubles.append((int(a), int(b)))
    return _Targets(singles, no_effect, direct, doubles)


def _programme_shift(p: DemoParams, genes: _Genes, tg: _Targets, targets: tuple[int, ...], c: int) -> np.ndarray:
    """Programme shift of a perturbation in cell type ``c``: direct effects (+ interaction for doubles), gated
    by the cell type, propagated through the network, plus the response shared by every effective knockdown."""
    d = sum(tg.direct[t] for t in targets)
    if len(targets) == 2:
        d = d + 0.5 * tg.direct[targets[0]] * tg.direct[targets[1]]
    out = genes.propagate @ (d * genes.gate[c])
    if any(t not in tg.no_effect for t in targets):
        common = np.zeros(len(PROGRAMS))
        common[1] = -p.common_effect  # e.g. slower proliferation, in every cell type
        out = out + common
    return out


def _cells(rng: np.random.Generator, p: DemoParams, genes: _Genes, tg: _Targets) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """NB counts of every condition in every cell type (controls and perturbations), in random cell order."""
    symbols, n_prog = genes.symbols, len(PROGRAMS)
    conditions: list[tuple[str, tuple[int, ...]]] = [(CONTROL_LABEL, ())]
    conditions += [(symbols[g], (int(g),)) for g in tg.singles]
    conditions += [(f"{symbols[a]}+{symbols[b]}", (a, b)) for a, b in tg.doubles]
    rows_obs, blocks = [], []
    for c, ct in enumerate(p.cell_types):
        for label, targets in conditions:
            n = p.n_control_cells if not targets else p.cells_per_target
            batch_idx = rng.integers(0, len(p.batches), size=n)
            shift = _programme_shift(p, genes, tg, targets, c) if targets else 0.0
            prog = genes.activity[c] + shift + rng.normal(0, 0.15, size=(n, n_prog))
            log_rate = genes.base + prog @ genes.loadings.T + genes.batch_eff[batch_idx]
            rate = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
            for t in targets:
                rate[:, t] *= p.knockdown
            prop = rate / rate.sum(axis=1, keepdims=True)
            lib = p.library_size * np.exp(rng.normal(0, p.library_sd, size=n)) * (1 + 0.2 * batch_idx)
            mu = prop * lib[:, None]
            lam = rng.gamma(p.dispersion, mu / p.dispersion)
            blocks.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
            rows_obs += [(label, ct, p.batches[batch_idx[k]]) for k in range(n)]
    obs = pd.DataFrame(rows_obs, columns=["target_gene", "cell_type", "batch"])
    obs.index = [f"cell{i:06d}" for i in range(len(obs))]
    perm = rng.permutation(len(obs))  # cells in random order, as a real screen
    return obs.iloc[perm], sp.vstack(blocks).tocsr()[perm]


def _naming_quirks(rng: np.random.Generator, p: DemoParams, genes: _Genes, tg: _Targets, X: sp.csr_matrix):
    """Aliases, extra genes and universe genes never measured: the raw matrix as a real source would name it.
    Returns (raw matrix, var, alias_of, missing genes, non-target genes)."""
    G, symbols = p.n_genes, genes.symbols
    target_set = set(tg.singles.tolist())
    non_targets = np.array([g for g in range(G) if g not in target_set])
    n_alias = max(1, int(round(p.alias_fraction * G)))
    n_extra = max(1, int(round(p.extra_gene_fraction * G)))
    n_missing = max(1, int(round(p.missing_gene_fraction * G)))
    picks = rng.choice(non_targets, size=n_alias + n_missing, replace=False)
    alias_genes, missing_genes = picks[:n_alias], picks[n_alias:]
    alias_of = {int(g): f"{symbols[g]}L{int(rng.integers(1, 9))}" for g in alias_genes}
    measured = np.setdiff1d(np.arange(G), missing_genes)
    raw_names = [alias_of.get(int(g), symbols[g]) for g in measured]
    extra_names = [f"SIMNC{i + 1}" for i in range(n_extra)]
    extra_counts = sp.csr_matrix(rng.poisson(0.3, size=(X.shape[0], n_extra)).astype(np.float32))
    X_raw = sp.hstack([X[:, measured], extra_counts]).tocsr()
    var = pd.DataFrame(index=pd.Index(raw_names + extra_names, name="gene_symbol"))
    return X_raw, var, alias_of, missing_genes, non_targets, extra_names


def _write_annotations(rng: np.random.Generator, paths: dict[str, Path], genes: _Genes, alias_of: dict,
                       non_targets: np.ndarray) -> set:
    """NCBI gene_info, gene2go (terms under each gene's programme roots) and the OBO; returns unannotated genes."""
    G, symbols, member = len(genes.symbols), genes.symbols, genes.member
    gi = ["#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\tdescription\t"
          "type_of_gene\tSymbol_from_nomenclature_authority\tFull_name_from_nomenclature_authority\t"
          "Nomenclature_status\tOther_designations\tModification_date\tFeature_type"]
    g2g = ["#tax_id\tGeneID\tGO_ID\tEvidence\tQualifier\tGO_term\tPubMed\tCategory"]
    unannotated = set(rng.choice(non_targets, size=max(1, G // 20), replace=False).tolist())
    for g in range(G):
        gene_id = 9_000_000 + g
        progs = np.flatnonzero(member[g])
        desc = "simulated " + " and ".join(PROGRAMS[i][1] for i in progs) + " gene"
        syn = alias_of.get(g, "-")
        gi.append(f"9606\t{gene_id}\t{symbols[g]}\t-\t{syn}\t-\t{1 + g % 22}\t-\t{desc}\tprotein-coding\t"
                  f"-\t-\t-\t-\t20260101\t-")
        if g in unannotated:
            continue
        for i in progs:
            for j in sorted(rng.choice(len(_CHILD_TERMS), size=2, replace=False)):
                tname = _CHILD_TERMS[j][0].format(x=PROGRAMS[i][1])
                g2g.append(f"9606\t{gene_id}\t{_go_id(i, j)}\tIDA\t-\t{tname}\t-\tProcess")
    _write_gz("\n".join(gi) + "\n", paths["gene_info"])
    _write_gz("\n".join(g2g) + "\n", paths["gene2go"])
    write_obo(paths["go_obo"])
    return unannotated


def simulate_demo(outdir: str | os.PathLike, *, seed: int = 0, params: DemoParams | None = None) -> dict[str, Path]:
    """Write the demo dataset and its annotation files into ``outdir``; returns the paths by role."""
    p = params or DemoParams()
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    if p.n_single_targets + 2 * p.n_double_targets > p.n_genes // 2:
        raise ValueError("demo: too many targets for n_genes; raise demo.n_genes or lower the target counts")
    genes = _genes_and_programs(rng, p)
    tg = _targets(rng, p, genes)
    obs, X = _cells(rng, p, genes, tg)
    X_raw, var, alias_of, missing_genes, non_targets, extra_names = _naming_quirks(rng, p, genes, tg, X)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {
        "counts": outdir / "demo_counts.h5ad",
        "universe": outdir / "universe.txt",
        "gene_info": outdir / "annotations" / "Homo_sapiens.gene_info.gz",
        "gene2go": outdir / "annotations" / "gene2go.gz",
        "go_obo": outdir / "annotations" / "go-basic.obo",
        "simulation": outdir / "simulation.json",
    }
    with H5adWriter(paths["counts"], obs=obs, var=var,
                    uns={"simulation": {"seed": seed, "generator": "pertpipe.data.simulate"}}) as w:
        w.append(X_raw)
    symbols = genes.symbols
    write_text("\n".join(symbols.tolist()) + "\n", paths["universe"])
    unannotated = _write_annotations(rng, paths, genes, alias_of, non_targets)
    truth = {
        "params": asdict(p), "seed": seed,
        "programs": [x[1] for x in PROGRAMS],
        "cell_type_activity": {ct: genes.activity[c].round(4).tolist() for c, ct in enumerate(p.cell_types)},
        "targets": {symbols[g]: {"programs": [PROGRAMS[i][1] for i in np.flatnonzero(genes.member[g])],
                                 "no_effect": bool(g in tg.no_effect)} for g in tg.singles},
        "doubles": [f"{symbols[a]}+{symbols[b]}" for a, b in tg.doubles],
        "aliases": {alias_of[g]: symbols[g] for g in alias_of},
        "extra_genes": extra_names,
        "unmeasured_genes": sorted(symbols[missing_genes].tolist()),
        "unannotated_genes": sorted(symbols[list(unannotated)].tolist()),
    }
    write_json(truth, paths["simulation"])
    return paths


# -- screens at scale ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScreenParams:
    """A large single-cell-line screen written chunk by chunk (:func:`write_screen`): the VCC's shape by default
    (~221k cells, 40k controls, 200 targets, ~50k UMI per cell). Counts are gamma-Poisson around
    ``umi_per_cell x softmax(base + effect + batch)`` (the gamma drawn as a log-normal of the same variance,
    ``ln(1 + 1 / dispersion)``, which is several times faster at this size); each target knocks its own gene down and moves
    ``de_genes`` other genes by log-fold changes of sd ``effect_sd``."""

    n_cells: int = 221_000
    n_controls: int = 40_000
    batches: int = 4
    umi_per_cell: float = 50_000.0
    library_sd: float = 0.3
    base_sd: float = 2.7
    dispersion: float = 4.0
    de_genes: int = 300
    effect_sd: float = 0.5
    knockdown: float = 0.2
    chunk_size: int = 4000


def write_screen(path: str | os.PathLike, genes: list[str], targets: list[str], *, seed: int = 0,
                 params: ScreenParams | None = None, cell_type: str | None = None) -> dict[str, Any]:
    """Write a raw-count screen (obs ``target_gene`` with ``non-targeting`` controls, ``batch``; var = ``genes``)
    to ``path``, streaming: memory follows ``chunk_size`` cells, not the file. Cells come in random order, as a
    real screen's; every target has the same number of cells. Returns the count statistics of the first chunk."""
    p = params or ScreenParams()
    rng = np.random.default_rng(seed)
    G = len(genes)
    gidx = {g: i for i, g in enumerate(genes)}
    missing = [t for t in targets if t not in gidx]
    if missing:
        raise ValueError(f"write_screen: targets not among the genes: {missing[:5]}")
    base = rng.normal(0, p.base_sd, G).astype(np.float32)
    effects = np.zeros((len(targets) + 1, G), np.float32)  # row 0: controls
    for k, t in enumerate(targets, start=1):
        de = rng.choice(G, size=min(p.de_genes, G), replace=False)
        effects[k, de] = rng.normal(0, p.effect_sd, len(de))
        effects[k, gidx[t]] = np.log(p.knockdown)
    batch_eff = rng.normal(0, 0.1, (p.batches, G)).astype(np.float32)
    n_pert = p.n_cells - p.n_controls
    per = np.full(len(targets), n_pert // len(targets))
    per[: n_pert - per.sum()] += 1
    label = rng.permutation(np.concatenate([np.zeros(p.n_controls, np.int64), np.repeat(np.arange(1, len(targets) + 1), per)]))
    batch = rng.integers(0, p.batches, p.n_cells)
    names = np.array([CONTROL_LABEL, *targets])
    obs = pd.DataFrame({"target_gene": names[label], "batch": [f"b{b}" for b in batch]},
                       index=[f"cell{i:07d}" for i in range(p.n_cells)])
    if cell_type:
        obs["cell_type"] = cell_type
    stats = None
    with H5adWriter(path, obs=obs, var=pd.DataFrame(index=pd.Index(genes)), dtype=np.int32,
                    uns={"simulation": {"seed": seed, "generator": "pertpipe.data.simulate.write_screen",
                                        "params": asdict(p)}}) as w:
        for start in range(0, p.n_cells, p.chunk_size):
            stop = min(start + p.chunk_size, p.n_cells)
            logit = base + effects[label[start:stop]] + batch_eff[batch[start:stop]]
            logit -= logit.max(axis=1, keepdims=True)
            np.exp(logit, out=logit)
            lib = p.umi_per_cell * np.exp(rng.normal(0, p.library_sd, stop - start)).astype(np.float32)
            logit *= (lib / logit.sum(axis=1))[:, None]
            sigma2 = np.log1p(1.0 / p.dispersion)
            noise = rng.standard_normal(logit.shape, dtype=np.float32)
            noise *= np.float32(np.sqrt(sigma2))
            noise += np.float32(-sigma2 / 2)
            np.exp(noise, out=noise)
            logit *= noise
            block = sp.csr_matrix(rng.poisson(logit).astype(np.int32))
            if stats is None:
                stats = count_statistics(block)
            w.append(block)
    return {"cells": p.n_cells, "genes": G, "targets": len(targets), "first_chunk": stats}
