"""Universe loading, NCBI alias rescue and chunked alignment (checked against the naive in-memory way)."""

import gzip

import anndata as ad
import numpy as np
import pytest

from pertpipe.data.adapters import get_adapter
from pertpipe.data.genes import (align_genes, knowledge_genes, load_alias_map, load_universe, plan_alignment,
                                 write_knowledge_genes)
from pertpipe.data.standardize import standardize
from pertpipe.errors import ContractError

GENE_INFO_HEADER = ("#tax_id\tGeneID\tSymbol\tLocusTag\tSynonyms\tdbXrefs\tchromosome\tmap_location\tdescription\t"
                    "type_of_gene\tSymbol_from_nomenclature_authority\tFull_name_from_nomenclature_authority\t"
                    "Nomenclature_status\tOther_designations\tModification_date\tFeature_type")


def _gene_info(path, rows):
    lines = [GENE_INFO_HEADER] + [f"9606\t{i}\t{sym}\t-\t{syn}\t-\t1\t-\tdesc\tprotein-coding\t-\t-\t-\t-\t1\t-"
                                  for i, (sym, syn) in enumerate(rows)]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


def test_alias_map_both_directions_skips_ambiguous(tmp_path):
    _gene_info(tmp_path / "gi.gz", [("MARCHF1", "MARCH1|RNF171"), ("SEPTIN7", "SEPT7|AMB"), ("OTHER", "AMB"),
                                    ("ACP3", "5'-NT|ACPP"), ("NEWX", "OTHER|SEPTIN7"), ("C9", "-"),
                                    ("AKR1C1", "C9|DD1"), ("MARCHF2", "RNF171")])
    amap, stats = load_alias_map(tmp_path / "gi.gz", ["MARCHF1", "SEPTIN7", "OTHER", "ACPP", "C9"])
    # old alias -> universe symbol; current symbol -> the universe's retired name (ACP3 -> ACPP).
    # AKR1C1 is not rescued into C9 (C9 is a current symbol of its own gene); RNF171 is claimed twice.
    assert amap == {"MARCH1": "MARCHF1", "SEPT7": "SEPTIN7", "ACP3": "ACPP"}
    assert stats == {"aliases": 3, "ambiguous_aliases": 2}


def test_plan_exact_wins_over_alias():
    plan = plan_alignment(["A", "OLD_A", "B", "X"], ["A", "B", "C"], {"OLD_A": "A", "X": "C"})
    assert plan.source_index.tolist() == [0, 2, 3]
    assert plan.rescued == {"X": "C"} and plan.dropped == ["OLD_A"]
    assert (plan.n_matched, plan.n_filled) == (2, 0)


def test_universe_file_errors(tmp_path):
    (tmp_path / "h.csv").write_text("gene_name\nA\nB\n")
    with pytest.raises(ContractError, match="header"):
        load_universe(tmp_path / "h.csv")
    (tmp_path / "d.csv").write_text("A\nB\nA\n")
    with pytest.raises(ContractError, match="duplicate"):
        load_universe(tmp_path / "d.csv")
    (tmp_path / "ok.csv").write_text("A\nB\n\n")
    assert load_universe(tmp_path / "ok.csv") == ["A", "B"]


def _canonical(tmp_path, a):
    a.write_h5ad(tmp_path / "raw.h5ad")
    standardize(tmp_path / "raw.h5ad", tmp_path / "std.h5ad", adapter=get_adapter("canonical"), chunk_size=9,
                uns={"pertpipe": {"stage": "test"}})
    return tmp_path / "std.h5ad"


def test_chunked_alignment_equals_naive(tmp_path, adata_factory):
    genes = ["G1", "OLDG2", "G3", "JUNK", "G5", "G6"]
    a = adata_factory(n_cells=40, n_genes=6, genes=genes)
    std = _canonical(tmp_path, a)
    universe = ["G6", "G5", "G4", "G3", "G2", "G1"]
    rep = align_genes(std, tmp_path / "al.h5ad", universe=universe, aliases={"OLDG2": "G2"}, chunk_size=7)
    b = ad.read_h5ad(tmp_path / "al.h5ad")
    s = ad.read_h5ad(std)
    assert list(b.var_names) == universe
    assert b.var["in_source"].tolist() == [True, True, False, True, True, True]
    naive = s.X.toarray()
    col = {g: i for i, g in enumerate(s.var_names)}
    for j, g in enumerate(universe):
        src = {"G2": "OLDG2"}.get(g, g)
        expect = naive[:, col[src]] if src in col else np.zeros(s.n_obs)
        np.testing.assert_array_equal(b.X[:, j].toarray().ravel(), expect)
    np.testing.assert_array_equal(b.layers["counts"][:, 0].toarray().ravel(), s.layers["counts"][:, 5].toarray().ravel())
    assert rep["rescued_pairs"] == {"OLDG2": "G2"}
    assert (rep["matched"], rep["rescued_by_alias"], rep["filled_with_zeros"], rep["dropped"]) == (4, 1, 1, 1)
    assert rep["dropped_genes"] == ["JUNK"]


def test_too_few_genes_matched_is_an_error(tmp_path, adata_factory):
    a = adata_factory(n_cells=20, n_genes=5, genes=[f"ENSG0000{i}" for i in range(5)])
    std = _canonical(tmp_path, a)
    with pytest.raises(ContractError) as err:
        align_genes(std, tmp_path / "al.h5ad", universe=["A", "B", "C"], min_source_matched=0.5)
    assert "0/5 source genes" in str(err.value) and "ENSG00000" in str(err.value)
    assert "min_source_matched" in str(err.value) and not (tmp_path / "al.h5ad").exists()
    a2 = adata_factory(n_cells=20, n_genes=2, genes=["A", "B"])
    std2 = _canonical(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, a2)
    with pytest.raises(ContractError, match="min_universe_matched"):
        align_genes(std2, tmp_path / "al2.h5ad", universe=[f"U{i}" for i in range(200)] + ["A", "B"],
                    min_universe_matched=0.5)


def test_knowledge_genes_add_targets_outside_the_panel(tmp_path, adata_factory):
    """A gene panel rarely holds its perturbation targets: the knowledge stage must describe them too (training
    and held-out labels, doubles split, controls left out), after the readout genes in their order."""
    genes, extra = knowledge_genes(["B", "A"], ["non-targeting", "C+A", "B", "D", "C"])
    assert genes == ["B", "A", "C", "D"] and extra == ["C", "D"]
    (tmp_path / "genes.txt").write_text("G0\nG1\nG2\n")
    train = adata_factory(n_cells=12, n_genes=3, genes=["G0", "G1", "G2"], targets=("TF1", "G1+TF2"))
    train.write_h5ad(tmp_path / "train.h5ad")
    (tmp_path / "template.csv").write_text("target_gene,cell_type,batch,n_cells\nHELD+G0,k562,b,5\n")
    fig = write_knowledge_genes(tmp_path / "genes.txt", tmp_path / "train.h5ad", tmp_path / "template.csv",
                                tmp_path / "knowledge_genes.txt")
    assert load_universe(tmp_path / "knowledge_genes.txt") == ["G0", "G1", "G2", "HELD", "TF1", "TF2"]
    assert fig["targets_outside_readout"] == 3
    (tmp_path / "bad.csv").write_text("gene,n\nX,1\n")
    with pytest.raises(ContractError, match="target_gene"):
        write_knowledge_genes(tmp_path / "genes.txt", tmp_path / "train.h5ad", tmp_path / "bad.csv",
                              tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()
