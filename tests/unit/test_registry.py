"""The committed dataset registry and its error messages."""

import pytest
from conftest import REPO

from pertpipe.data.registry import Registry
from pertpipe.errors import ConfigError


def test_committed_registry_has_the_required_entries():
    reg = Registry.load(REPO / "resources" / "datasets.yaml")
    for name in ("demo", "perturbench_devel", "norman2019_gears", "adamson2016_gears", "replogle2022_k562_gears",
                 "replogle2022_k562_scperturb", "vcc2025"):
        e = reg.dataset(name)
        assert e.adapter and e.licence and e.citation
        assert e.simulated or e.urls
    assert reg.dataset("perturbench_devel").sha256 == "220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b"
    assert reg.download_entry("perturbench_norman").name == "perturbench_devel"
    for r in ("vcc_gene_names", "vcc_val_counts", "gene_info", "gene2go", "go_obo"):
        assert reg.get(r, "resource").mirror_path


def test_unknown_names_list_the_options():
    reg = Registry.load(REPO / "resources" / "datasets.yaml")
    with pytest.raises(ConfigError) as err:
        reg.dataset("norman2020")
    assert "unknown dataset 'norman2020'" in str(err.value) and "perturbench_devel" in str(err.value)


@pytest.mark.parametrize("body, words", [
    ("datasets:\n  x: {url: http://a/b, file: b, adapter: canonical, colour: red}\n", "unknown field(s) ['colour']"),
    ("datasets:\n  x: {url: http://a/b, file: b, adapter: canonical, archive: rar}\n", "archive is 'rar'"),
    ("datasets:\n  x: {url: http://a/b, file: b, adapter: canonical, archive: zip}\n", "needs `member`"),
    ("datasets:\n  x: {url: http://a/b, file: b, adapter: canonical, sha256: abc}\n", "not a 64-digit"),
    ("datasets:\n  x: {url: http://a/b, file: b}\n", "needs `adapter`"),
    ("datasets:\n  x: {source: y, adapter: canonical}\n", "source names 'y'"),
    ("datasets: [unclosed\n", "not valid YAML"),
])
def test_invalid_registry(tmp_path, body, words):
    (tmp_path / "r.yaml").write_text(body)
    with pytest.raises(ConfigError) as err:
        Registry.load(tmp_path / "r.yaml")
    assert words in str(err.value) and "r.yaml" in str(err.value)
