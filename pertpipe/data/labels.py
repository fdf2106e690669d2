"""The labels task's data: per (perturbation, cell line) x readout gene, a DE label and a direction label.

Source files are PerturbQA's (Wu et al. 2025, ICLR; github.com/Genentech/PerturbQA, Genentech Non-Commercial
Software License 1.0): one CSV per line and task, columns ``pert,gene,label,split`` (DE: 1 = differentially
expressed; direction: 1 = up, 0 = down, given for DE pairs only; ``split`` train / test, a perturbation in one).

The contract (``labels.h5ad``): rows = (perturbation, line) with ``obs`` ``target_gene``, ``cell_type`` (the line),
``batch`` (= line) and ``given_split``; columns = readout genes; ``X`` the DE codes and ``layers["dir"]`` the
direction codes, int8: 1, 0, or :data:`MISSING` (-1) for an unlabelled pair. Small: a line is ~2,000 x ~5,000.

Splits (:func:`split_labels`): ``given`` (the file's own), ``random_unseen`` (seeded re-split of perturbations),
``cell_line_holdout`` (leave one line out of a multi-line set: the held-out line's test perturbations are the test
rows, every other line's rows train, and the held-out line's training rows too unless ``holdout_train`` is false).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pertpipe.errors import ConfigError, ContractError, LeakageError

MISSING = -1
COLUMNS = ("pert", "gene", "label", "split")
SCALE = "labels"  # uns['pertpipe']['standardize']['scale'] of a labels file (pertpipe.tasks: the labels task)
LICENCE = "Genentech Non-Commercial Software License 1.0 (PerturbQA); screens' data CC BY 4.0"


@dataclass(frozen=True)
class LineFiles:
    line: str
    de: str
    dir: str


def read_label_csv(path: str | os.PathLike, *, kind: str) -> pd.DataFrame:
    """One PerturbQA CSV, checked: the columns, labels in {0, 1}, splits train/test, no pair twice, no perturbation
    in both train and test."""
    try:
        df = pd.read_csv(path, dtype={"pert": str, "gene": str, "split": str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ContractError(path, "file", f"not a readable CSV ({exc})", "give PerturbQA's <line>-de.csv / -dir.csv")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ContractError(path, f"column {missing[0]}", f"missing (columns: {[str(c) for c in df.columns][:8]})",
                            f"a {kind} labels file has the columns {','.join(COLUMNS)}")
    df = df[list(COLUMNS)]
    for col in ("pert", "gene"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna().to_numpy())[0]) + 2
            raise ContractError(path, f"column {col}", f"empty at line {row}", "give a gene symbol on every line")
    lab = pd.to_numeric(df["label"], errors="coerce")
    bad = ~lab.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ContractError(path, "column label", f"value {str(df['label'].iloc[i])!r} at line {i + 2} is not 0 or 1",
                            "labels are 1 (DE / up) or 0 (not DE / down); drop unlabelled pairs instead of coding them")
    df["label"] = lab.astype(np.int8)
    bad = ~df["split"].isin(["train", "test"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ContractError(path, "column split", f"value {str(df['split'].iloc[i])!r} at line {i + 2}",
                            "use train or test")
    dup = df.duplicated(["pert", "gene"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ContractError(path, "columns pert,gene", f"pair ({df['pert'].iloc[i]}, {df['gene'].iloc[i]}) appears "
                            f"twice (line {i + 2})", "keep one label per pair")
    both = sorted(set(df.loc[df["split"] == "train", "pert"]) & set(df.loc[df["split"] == "test", "pert"]))
    if both:
        raise LeakageError(f"{path}: field 'split': perturbation(s) {both[:5]} are in both train and test "
                           f"({len(both)} in all). Fix: give each perturbation one split")
    return df


def official_symbols(gene_info: str | os.PathLike) -> list[str]:
    opener = gzip.open if str(gene_info).endswith(".gz") else open
    with opener(gene_info, "rt") as fh:
        header = fh.readline().lstrip("#").rstrip("\n").split("\t")
    if "Symbol" not in header:
        raise ContractError(gene_info, "header", "no Symbol column", "give an NCBI gene_info file")
    col = pd.read_csv(gene_info, sep="\t", usecols=[header.index("Symbol")], header=0, names=None, dtype=str)
    return sorted(set(col.iloc[:, 0].dropna()))


def symbol_map(symbols: list[str], gene_info: str | os.PathLike | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Each symbol -> its current NCBI symbol (aliases rescued); unknown ones are kept as they are and reported."""
    if gene_info is None:
        return {s: s for s in symbols}, {"aligned": False}
    from pertpipe.data.genes import load_alias_map

    official = set(official_symbols(gene_info))
    aliases, stats = load_alias_map(gene_info, sorted(official))
    out, rescued, unknown = {}, {}, []
    for s in symbols:
        if s in official:
            out[s] = s
        elif s in aliases:
            out[s] = rescued[s] = aliases[s]
        else:
            out[s] = s
            unknown.append(s)
    return out, {"aligned": True, "symbols": len(symbols), "rescued": rescued, "unknown": sorted(unknown),
                 "n_unknown": len(unknown), **stats}


def build_labels(lines: list[LineFiles], *, gene_info: str | os.PathLike | None = None,
                 max_unknown_fraction: float = 0.05) -> tuple[Any, dict[str, Any]]:
    """The labels AnnData of one or more lines (rows = (perturbation, line), columns = the union of readout genes)."""
    import anndata as ad

    frames, report = [], {"lines": {}}
    for lf in lines:
        de = read_label_csv(lf.de, kind="DE")
        dr = read_label_csv(lf.dir, kind="direction")
        keys = set(zip(de["pert"], de["gene"]))
        orphan = [k for k in zip(dr["pert"], dr["gene"]) if k not in keys]
        if orphan:
            raise ContractError(lf.dir, "columns pert,gene", f"{len(orphan)} direction pairs have no DE label, e.g. "
                                f"{orphan[0]}", f"give the DE and direction files of the same line ({lf.de})")
        split_of = dict(zip(de["pert"], de["split"]))
        moved = [p for p, s in zip(dr["pert"], dr["split"]) if split_of.get(p, s) != s]
        if moved:
            raise LeakageError(f"{lf.dir}: field 'split': perturbation {moved[0]} is '{split_of[moved[0]]}' in "
                               f"{lf.de} but not here. Fix: use the files of one release")
        m = de.rename(columns={"label": "de"}).merge(dr[["pert", "gene", "label"]].rename(columns={"label": "dir"}),
                                                      on=["pert", "gene"], how="left")
        m["dir"] = m["dir"].fillna(MISSING).astype(np.int8)
        m["line"] = lf.line
        frames.append(m)
        report["lines"][lf.line] = {
            "de_file": str(lf.de), "dir_file": str(lf.dir), "pairs": len(de), "dir_pairs": len(dr),
            "perturbations": {s: int(de.loc[de["split"] == s, "pert"].nunique()) for s in ("train", "test")},
            "readout_genes": int(de["gene"].nunique()), "de_rate": round(float(de["label"].mean()), 4),
            "up_rate": round(float(dr["label"].mean()), 4) if len(dr) else None}
    df = pd.concat(frames, ignore_index=True)
    symbols = sorted(set(df["pert"]) | set(df["gene"]))
    smap, align = symbol_map(symbols, gene_info)
    if align.get("aligned") and symbols and align["n_unknown"] / len(symbols) > max_unknown_fraction:
        src = ", ".join(str(lf.de) for lf in lines)
        raise ContractError(src, "columns pert,gene", f"{align['n_unknown']} of {len(symbols)} symbols are not NCBI "
                            f"human gene symbols, e.g. {align['unknown'][:5]}", "give HGNC symbols (not Ensembl ids "
                            "or another species'), or raise stage1.labels.max_unknown_fraction")
    df["pert"] = df["pert"].map(smap)
    df["gene"] = df["gene"].map(smap)
    clash = df.duplicated(["pert", "line", "gene"])
    if clash.any():  # two source symbols became one: keep the first label, say so
        align["merged_pairs"] = int(clash.sum())
        df = df[~clash]
    rows = df[["pert", "line"]].drop_duplicates().sort_values(["line", "pert"]).reset_index(drop=True)
    genes = sorted(df["gene"].unique())
    ri = pd.Series(np.arange(len(rows)), index=pd.MultiIndex.from_frame(rows))
    gi = pd.Series(np.arange(len(genes)), index=genes)
    r = ri.loc[pd.MultiIndex.from_frame(df[["pert", "line"]])].to_numpy()
    c = gi.loc[df["gene"]].to_numpy()
    X = np.full((len(rows), len(genes)), MISSING, dtype=np.int8)
    D = np.full_like(X, MISSING)
    X[r, c] = df["de"].to_numpy()
    D[r, c] = df["dir"].to_numpy()
    given = df.drop_duplicates(["pert", "line"]).set_index(["pert", "line"])["split"]
    obs = pd.DataFrame({"target_gene": rows["pert"].to_numpy(), "cell_type": rows["line"].to_numpy(),
                        "batch": rows["line"].to_numpy(),
                        "given_split": given.loc[pd.MultiIndex.from_frame(rows)].to_numpy()},
                       index=[f"{p}|{line}" for p, line in zip(rows["pert"], rows["line"])])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes), layers={"dir": D})
    report.update(rows=len(rows), readout_genes=len(genes), perturbations=int(rows["pert"].nunique()),
                  labelled_pairs=int((X != MISSING).sum()), de_rate=round(float(X[X != MISSING].mean()), 4),
                  alignment={k: (v if k != "rescued" else dict(list(v.items())[:50])) for k, v in align.items()},
                  licence=LICENCE)
    adata.uns["pertpipe"] = {"standardize": {"scale": SCALE, "licence": LICENCE}}
    return adata, report


def split_labels(obs: pd.DataFrame, *, strategy: str, seed: int, fraction: float = 0.25,
                 holdout: str | None = None, holdout_train: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """'train' / 'test' / '' (unused) per row, and the split's record. Perturbations never cross train and test within
    a line; with cell_line_holdout a test perturbation may be measured (and train) in another line."""
    lines = sorted(obs["cell_type"].unique())
    split = np.full(len(obs), "", dtype=object)
    if strategy == "given":
        split[:] = obs["given_split"].to_numpy()
    elif strategy == "random_unseen":
        rng = np.random.default_rng(seed)
        perts = np.array(sorted(obs["target_gene"].unique()))
        n_test = max(1, int(round(fraction * len(perts))))
        test = set(rng.choice(perts, size=n_test, replace=False))
        split[:] = np.where(obs["target_gene"].isin(test), "test", "train")
    elif strategy == "cell_line_holdout":
        if len(lines) < 2:
            raise ConfigError(f"stage1.split.strategy is cell_line_holdout but the labels hold one line ({lines}). "
                              "Fix: use a multi-line dataset (perturbqa_lines) or strategy given")
        if holdout is None:
            holdout = lines[-1]
        if holdout not in lines:
            raise ConfigError(f"stage1.split.holdout_cell_type is '{holdout}', not one of the lines {lines}. "
                              f"Fix: name one of them")
        held = obs["cell_type"].to_numpy() == holdout
        given = obs["given_split"].to_numpy()
        split[~held] = "train"
        split[held & (given == "test")] = "test"
        if holdout_train:
            split[held & (given == "train")] = "train"
    else:
        raise ConfigError(f"stage1.split.strategy '{strategy}' does not fit a labels dataset. Fix: use given, "
                          "random_unseen or cell_line_holdout")
    for line in lines:  # no perturbation in both train and test of one line
        m = obs["cell_type"].to_numpy() == line
        tr = set(obs["target_gene"][m & (split == "train")])
        te = set(obs["target_gene"][m & (split == "test")])
        if tr & te:
            raise LeakageError(f"labels split: perturbation(s) {sorted(tr & te)[:5]} in both train and test of line "
                               f"{line}. Fix: report this as a bug")
    record = {"strategy": strategy, "seed": seed, "holdout": holdout if strategy == "cell_line_holdout" else None,
              "rows": {s: int((split == s).sum()) for s in ("train", "test")},
              "perturbations": {s: int(obs["target_gene"][split == s].nunique()) for s in ("train", "test")},
              "test_in_other_lines": None}
    if strategy == "cell_line_holdout":
        te = set(obs["target_gene"][split == "test"])
        other = set(obs["target_gene"][obs["cell_type"].to_numpy() != holdout])
        record["test_in_other_lines"] = len(te & other)
    return split, record


def label_genes(adata: Any) -> list[str]:
    """Every gene the knowledge stage must describe: the perturbations and the readout genes."""
    return sorted(set(adata.obs["target_gene"].astype(str)) | set(adata.var_names.astype(str)))


@dataclass
class LabelData:
    """A labels file in memory for the models: codes, rows, genes."""

    de: np.ndarray  # [rows, genes] int8 codes
    dir: np.ndarray
    perts: np.ndarray
    lines: np.ndarray
    genes: list[str]

    @classmethod
    def read(cls, path: str | os.PathLike) -> LabelData:
        import anndata as ad

        return cls.from_adata(ad.read_h5ad(path))

    @classmethod
    def from_adata(cls, a: Any) -> LabelData:
        """A labels AnnData (the contract stage 1 writes) already in memory."""
        return cls(np.asarray(a.X, dtype=np.int8), np.asarray(a.layers["dir"], dtype=np.int8),
                   a.obs["target_gene"].astype(str).to_numpy(), a.obs["cell_type"].astype(str).to_numpy(),
                   [str(g) for g in a.var_names])

    def rows(self, mask: np.ndarray) -> LabelData:
        return LabelData(self.de[mask], self.dir[mask], self.perts[mask], self.lines[mask], self.genes)


def write_labels(adata: Any, path: str | os.PathLike) -> None:
    from pertpipe.io import atomic_path

    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)


def is_labels_file(path: str | os.PathLike) -> bool:
    from pertpipe.core.h5io import value_kind

    return value_kind(path) == SCALE


def labels_report_text(rep: dict[str, Any]) -> str:
    """The stage-1 report page of a labels dataset."""
    std, split = rep["standardize"], rep["split"]
    al = std.get("alignment") or {}
    out = [f"Stage 1 (labels): {rep['dataset']}", "", f"Licence: {std.get('licence')}", ""]
    for line, d in std["lines"].items():
        out.append(f"{line}: {d['pairs']} DE pairs ({d['de_rate']:.1%} DE), {d['dir_pairs']} direction pairs, "
                   f"{d['perturbations']['train']} train / {d['perturbations']['test']} test perturbations, "
                   f"{d['readout_genes']} readout genes  [{d['de_file']}, {d['dir_file']}]")
    out += ["", f"rows (perturbation x line): {std['rows']}; readout genes: {std['readout_genes']}; labelled pairs: "
            f"{std['labelled_pairs']}; genes for the knowledge stage: {std.get('knowledge_genes')}"]
    if al.get("aligned"):
        out.append(f"symbols: {al['symbols']}, aliases rescued {len(al.get('rescued') or {})}, unknown to NCBI "
                   f"gene_info {al['n_unknown']} (kept as they are): {', '.join(al['unknown'][:20])}")
    out += ["", f"split: {split['strategy']} (seed {split['seed']}); rows train {split['rows']['train']} / test "
            f"{split['rows']['test']}; perturbations train {split['perturbations']['train']} / test "
            f"{split['perturbations']['test']}"]
    if split.get("holdout"):
        out.append(f"held-out line {split['holdout']}: {split['test_in_other_lines']} test perturbations are measured "
                   "in another line")
    return "\n".join(out) + "\n"
