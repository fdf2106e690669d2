"""The user's manual: README is a manual (≤ 300 lines, no figure that RESULTS.md does not hold, no links that do not
resolve) and the configuration reference is what the schema renders to."""

from __future__ import annotations

import re

import yaml
from conftest import REPO

from pertpipe import config_docs

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_a_manual():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    results = (REPO / "docs" / "RESULTS.md").read_text()
    figures = set(re.findall(r"(?<![\w.])[-+−]?\d+\.\d{2,}", text))
    assert not {f for f in figures if f.lstrip("+-−") not in results}, "README quotes figures RESULTS.md does not hold"
    for phrase in ("session", "was lent", "this work", "said before"):
        assert phrase not in text.lower(), phrase


def test_every_relative_link_resolves():
    bad = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                bad.append(f"{page.name}: {target}")
    assert not bad, bad


def test_config_reference_is_generated_from_the_schema(tmp_path):
    assert (REPO / "docs" / "config_reference.md").read_text() == config_docs.render(), (
        "docs/config_reference.md is stale. Fix: python -m pertpipe.config_docs")
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    schema["properties"]["stage1"]["properties"]["brand_new_key"] = {"type": "integer", "default": 7,
                                                                    "minimum": 1, "description": "a | test key"}
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema, sort_keys=False))
    assert "| `stage1.brand_new_key` | integer | `7` | ≥ 1 | a \\| test key |" in config_docs.render(changed)
    keys = [r[0] for r in config_docs.rows(yaml.safe_load(config_docs.SCHEMA.read_text()))]
    assert "stage1.split.strategy" in keys and "evaluation.profile" in keys and len(keys) == len(set(keys))


def test_the_architecture_page_is_true_to_the_tree():
    """Every module docs/architecture.md names exists, and every module and package folder of pertpipe/ is named
    (as `pkg/module.py` / `pkg/` relative to pertpipe/)."""
    import re

    text = (REPO / "docs" / "architecture.md").read_text()
    pkg = REPO / "pertpipe"
    named = set(re.findall(r"`((?:[a-z_0-9]+/)*[a-z_0-9]+\.py)`", text))
    assert named and [m for m in sorted(named) if not ((REPO if m.startswith("tests/") else pkg) / m).is_file()] == []
    modules = {str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - named) == []
    folders = {str(p.parent.relative_to(pkg)) + "/" for p in pkg.rglob("__init__.py") if p.parent != pkg}
    assert sorted(f for f in folders if f"`{f}`" not in text) == []
