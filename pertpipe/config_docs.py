"""The configuration reference, generated from ``schemas/config.schema.yaml``: one row per key (dotted path), its
type, default, allowed values or bounds, and the schema's description. ``python -m pertpipe.config_docs`` writes
``docs/config_reference.md``; a test fails when the committed page is not what the schema renders to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "schemas" / "config.schema.yaml"
PAGE = REPO / "docs" / "config_reference.md"


def _type(node: dict[str, Any]) -> str:
    t = node.get("type")
    if isinstance(t, list):
        return " or ".join(str(x) for x in t)
    if t is None and "enum" in node:
        return "choice"
    return str(t or "any")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _allowed(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(", ".join(f"`{v}`" for v in node["enum"]))
    for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sym} {node[key]}")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    items = node.get("items")
    if isinstance(items, dict) and "enum" in items:
        parts.append("each of " + ", ".join(f"`{v}`" for v in items["enum"]))
    return "; ".join(parts)


def rows(node: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, allowed, description) for every property, depth first in the schema's order."""
    out = []
    for name, sub in (node.get("properties") or {}).items():
        key = f"{prefix}{name}"
        desc = " ".join(str(sub.get("description", "")).split())
        default = f"`{_short(sub['default'])}`" if "default" in sub else ""
        out.append((key, _type(sub), default, _allowed(sub), desc))
        if sub.get("properties"):
            out.extend(rows(sub, key + "."))
    return out


def render(schema_path: str | Path = SCHEMA) -> str:
    schema = yaml.safe_load(Path(schema_path).read_text())
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["# Configuration reference", "",
             "Generated from `schemas/config.schema.yaml` by `python -m pertpipe.config_docs`; do not edit by hand. "
             "Every key of `config.yaml`, its type, default and allowed values. Unknown keys are errors (the closest "
             "key is suggested). Prose and examples: [configuration.md](configuration.md).", "",
             "| key | type | default | allowed | what |", "|---|---|---|---|---|"]
    for key, typ, default, allowed, desc in rows(schema):
        lines.append(f"| `{key}` | {esc(typ)} | {esc(default)} | {esc(allowed)} | {esc(desc)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is not what {SCHEMA.name} renders to. Fix: python -m pertpipe.config_docs", file=sys.stderr)
            return 1
        return 0
    from pertpipe.io import write_text

    write_text(text, PAGE)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
