"""Ligand-receptor resources: CellChatDB, CellPhoneDB v4 (commot's table layout) and the LIANA consensus.

Every resource becomes one table: ``ligand``, ``receptor`` (complex names as given), ``ligand_genes`` and
``receptor_genes`` (subunits: complexes ``A_B`` split on ``_``), ``pathway``, ``resource``. Species: CellChatDB /
CellPhoneDB have one table per species (registry entries ``<resource>_<species>``); LIANA's file holds human
``consensus`` and ``mouseconsensus`` rows.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe.errors import ConfigError, ContractError

LR_RESOURCES = ("cellchatdb", "cellphonedb", "liana")


def resource_entry(resource: str, species: str) -> str:
    """The registry entry holding ``resource`` for ``species``."""
    if resource not in LR_RESOURCES:
        raise ConfigError(f"spatial.lr_resource is '{resource}'. Fix: use one of {list(LR_RESOURCES)}")
    return {"cellchatdb": f"cellchatdb_{species}", "cellphonedb": f"cellphonedb_v4_{species}",
            "liana": "liana_consensus"}[resource]


def split_complex(name: str) -> list[str]:
    """``ITGA4_ITGB1`` -> [ITGA4, ITGB1]; a plain gene is its own single subunit."""
    return [g for g in str(name).strip().split("_") if g and g.lower() != "nan"]


def read_lr_resource(path: str | os.PathLike, resource: str, species: str) -> pd.DataFrame:
    """The LR pairs of ``resource`` (one of LR_RESOURCES) for ``species`` from its file at ``path``."""
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001
        raise ContractError(path, "table", f"not a readable CSV ({exc})", "give the resource's CSV file") from exc
    if resource == "liana":
        need = {"source_genesymbol", "target_genesymbol", "resource"}
        if not need <= set(df.columns):
            raise ContractError(path, "columns", f"missing {sorted(need - set(df.columns))}",
                                "give liana's omni_resource.csv (source_genesymbol, target_genesymbol, resource)")
        label = "consensus" if species == "human" else "mouseconsensus"
        df = df[df["resource"] == label]
        if df.empty:
            raise ContractError(path, "resource", f"no rows labelled '{label}'",
                                "give a LIANA resource table that includes the consensus rows")
        out = pd.DataFrame({"ligand": df["source_genesymbol"].astype(str), "receptor": df["target_genesymbol"].astype(str),
                            "pathway": "", "resource": label})
    else:  # commot's layout: unnamed index, columns 0..3 = ligand, receptor, pathway, annotation
        if df.shape[1] < 3:
            raise ContractError(path, "columns", f"{df.shape[1]} columns", "give ligand, receptor, pathway columns")
        cols = list(df.columns)
        if str(cols[0]).startswith("Unnamed") or str(cols[0]) == "":
            cols = cols[1:]
        out = pd.DataFrame({"ligand": df[cols[0]].astype(str), "receptor": df[cols[1]].astype(str),
                            "pathway": df[cols[2]].fillna("").astype(str), "resource": resource})
    out = out[(out.ligand.str.len() > 0) & (out.receptor.str.len() > 0)].drop_duplicates(["ligand", "receptor"])
    out["ligand_genes"] = out.ligand.map(split_complex)
    out["receptor_genes"] = out.receptor.map(split_complex)
    out = out[(out.ligand_genes.str.len() > 0) & (out.receptor_genes.str.len() > 0)]
    if out.empty:
        raise ContractError(path, "pairs", "no ligand-receptor pairs", "give a non-empty resource table")
    genes = {g for gs in out.ligand_genes for g in gs} | {g for gs in out.receptor_genes for g in gs}
    looks_mouse = np.mean([g[:1].isupper() and g[1:] != g[1:].upper() for g in genes]) > 0.5
    if (species == "mouse") != looks_mouse:
        raise ContractError(path, "species", f"the gene symbols look {'mouse' if looks_mouse else 'human'} but the "
                            f"dataset's species is {species}", "use the resource table of the dataset's species")
    return out.reset_index(drop=True)


def match_symbols(pairs: pd.DataFrame, genes: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The resource's pairs with each subunit spelled as the data spell it: a symbol the data do not have exactly is
    matched case-insensitively (mouse ``Abca15`` and the data's ``abca15`` or ``ABCA15``; symbols are
    case-insensitive within a species). Returns the pairs and how many resource genes matched exactly, by case and
    not at all."""
    exact = set(genes)
    folded: dict[str, str] = {}
    for g in genes:
        folded.setdefault(g.upper(), g)
    resource = sorted({g for gs in list(pairs.ligand_genes) + list(pairs.receptor_genes) for g in gs})
    spelled = {g: g if g in exact else folded.get(g.upper(), g) for g in resource}
    counts = {"resource_genes": len(resource), "matched_exactly": sum(g in exact for g in resource),
              "matched_ignoring_case": sum(g not in exact and g.upper() in folded for g in resource)}
    counts["not_in_data"] = counts["resource_genes"] - counts["matched_exactly"] - counts["matched_ignoring_case"]
    out = pairs.copy()
    out["ligand_genes"] = [[spelled[g] for g in gs] for gs in pairs.ligand_genes]
    out["receptor_genes"] = [[spelled[g] for g in gs] for gs in pairs.receptor_genes]
    return out, counts


def expressed_genes(scrna_log: sp.spmatrix | np.ndarray, counts: sp.spmatrix | np.ndarray, genes: list[str],
                    cell_types: np.ndarray, *, min_mean: float, min_fraction: float) -> dict[str, list[str]]:
    """Genes expressed by at least one cell type: mean log1p-normalised ≥ ``min_mean`` and fraction of cells with a
    count > 0 ≥ ``min_fraction`` (both within the type). Returns gene -> the cell types that express it."""
    out: dict[str, list[str]] = {}
    types = np.asarray(cell_types).astype(str)
    for t in np.unique(types):
        rows = np.flatnonzero(types == t)
        mean = np.asarray(scrna_log[rows].mean(0)).ravel()
        frac = np.asarray((counts[rows] > 0).mean(0)).ravel()
        for j in np.flatnonzero((mean >= min_mean) & (frac >= min_fraction)):
            out.setdefault(genes[j], []).append(str(t))
    return out


def select_lr_genes(pairs: pd.DataFrame, scrna_genes: list[str], spatial_genes: list[str],
                    expressed: dict[str, list[str]]) -> dict[str, Any]:
    """The LR genes to impute: subunits of the resource's pairs that the scRNA-seq expresses."""
    sc, spg = set(scrna_genes), set(spatial_genes)
    lig = sorted({g for gs in pairs.ligand_genes for g in gs})
    rec = sorted({g for gs in pairs.receptor_genes for g in gs})
    all_lr = sorted(set(lig) | set(rec))
    keep = [g for g in all_lr if g in expressed]
    usable = pairs[[all(g in expressed for g in lg + rg) for lg, rg in zip(pairs.ligand_genes, pairs.receptor_genes)]]
    return {
        "n_pairs_resource": int(len(pairs)),
        "n_ligand_genes_resource": len(lig), "n_receptor_genes_resource": len(rec),
        "n_lr_genes_resource": len(all_lr),
        "n_lr_genes_in_scrna": sum(g in sc for g in all_lr),
        "n_lr_genes_expressed": len(keep),
        "lr_genes": keep,
        "ligands": [g for g in keep if g in set(lig)],
        "receptors": [g for g in keep if g in set(rec)],
        "measured_in_spatial": [g for g in keep if g in spg],
        "not_measured_in_spatial": [g for g in keep if g not in spg],
        "expressed_by": {g: expressed[g] for g in keep},
        "pairs": [{"ligand": r.ligand, "receptor": r.receptor, "ligand_genes": r.ligand_genes,
                   "receptor_genes": r.receptor_genes, "pathway": r.pathway} for r in usable.itertuples()],
    }
