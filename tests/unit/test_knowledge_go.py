"""Annotation readers and the GO facet extractor, on the real NCBI/GO files in ../shared/data."""

import gzip

import pytest
from conftest import REPO

from pertpipe.errors import ConfigError, ContractError
from pertpipe.knowledge.annotations import parse_obo, read_gene2go, read_gene_info
from pertpipe.knowledge.facets import NONE, coverage, go_facets, load_facets
from pertpipe.knowledge.gene_text import build_gene_text


@pytest.fixture(scope="module")
def real(shared_data):
    a = shared_data / "annotations"
    return parse_obo(a / "go-basic.obo.gz"), read_gene2go(a / "gene2go_human.gz"), read_gene_info(a / "Homo_sapiens.gene_info.gz")


def test_readers(real):
    onto, g2g, gi = real
    assert len(onto.terms) == 43558 and onto.terms["GO:0006915"].name == "apoptotic process"
    assert "GO:0008219" in onto.ancestors("GO:0006915")  # apoptosis is a cell death
    assert len(gi) == 77614 and set(g2g["category"]) == {"Process", "Function", "Component"}


def test_go_facets_of_real_genes(real):
    onto, g2g, gi = real
    facets = load_facets(REPO / "resources/facets.yaml", onto)
    genes = ["TP53", "HK2", "NOT_A_GENE_XYZ"]
    text, rep = build_gene_text(genes, gi, g2g, onto)
    assert rep["absent_from_gene_info"] == 1 and rep["absent_examples"] == ["NOT_A_GENE_XYZ"]
    table = go_facets(text, onto, facets)
    assert len(table) == 3 * len(facets)
    t = table.set_index(["gene", "facet"])["text"]
    assert "apoptotic" in t[("TP53", "cell_death_survival")]
    assert "transcription" in t[("TP53", "transcriptional_regulation")]
    assert t[("HK2", "immune_response")] == NONE  # hexokinase: no immune annotation
    assert "glycolytic" in t[("HK2", "metabolism")] or "glucose" in t[("HK2", "metabolism")]
    assert all(t[("NOT_A_GENE_XYZ", f.name)] == NONE for f in facets)
    cov = coverage(table, facets)
    assert cov["genes_with_any_facet"] == 2 and cov["genes_per_facet"]["immune_response"] == 1
    # deterministic and capped
    again = go_facets(text, onto, facets, max_chars=120)
    assert again["text"].str.len().max() <= 121 and go_facets(text, onto, facets).equals(table)


def test_unknown_facet_root(real, tmp_path):
    onto, _, _ = real
    (tmp_path / "f.yaml").write_text("facets:\n  - {name: x, description: d, go_roots: [GO:0006928]}\n")
    with pytest.raises(ConfigError) as err:
        load_facets(tmp_path / "f.yaml", onto)
    assert "unknown GO root(s) ['GO:0006928']" in str(err.value) and "f.yaml" in str(err.value)


def test_parse_errors_name_the_line(tmp_path):
    (tmp_path / "bad.obo").write_text("format-version: 1.2\n\n[Term]\nid: GO:1\nname: a\nrelationship: part_of\n")
    with pytest.raises(ContractError, match="line 6"):
        parse_obo(tmp_path / "bad.obo")
    (tmp_path / "bad2.obo").write_text("[Term]\nname: before id\n")
    with pytest.raises(ContractError, match="line 2"):
        parse_obo(tmp_path / "bad2.obo")
    with gzip.open(tmp_path / "g2g.gz", "wt") as fh:
        fh.write("#tax_id\tGeneID\tGO_ID\tEvidence\tQualifier\tGO_term\tPubMed\tCategory\n")
        fh.write("9606\t1\tGO:0000001\tIDA\t-\tx\t-\tProcess\n9606\t2\tGO:0000002\tIDA\n")
    with pytest.raises(ContractError, match="field 'line 3': 4 columns, expected 8"):
        read_gene2go(tmp_path / "g2g.gz")
    (tmp_path / "gi.txt").write_text("#tax_id\tGeneID\tSymbol\n")
    with pytest.raises(ContractError, match="gene_info header lacks"):
        read_gene_info(tmp_path / "gi.txt")
