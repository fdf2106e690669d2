"""docs/RESULTS.md is what benchmarks/results.py renders from the committed benchmark JSON (numbers are generated)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_results_page_matches_the_committed_json():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "results.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_result_file_says_where_it_ran():
    files = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    assert files
    for f in files:
        m = json.loads(f.read_text())["meta"]
        assert len(m["commit"]) == 40 and m["date"].endswith("UTC") and m["machine"]["cores"] >= 1
        assert "cell-eval" in m["versions"] and m["command"].startswith("python benchmarks/")


def test_a_section_shows_its_annotation(tmp_path):
    """`results.py --annotate` stores a line on how a run went in the JSON's meta; the page prints it under the
    section's header (and a section without one prints none)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import results

    meta = {"commit": "0" * 40, "date": "2026-12-06 00:00 UTC", "command": "python benchmarks/bench_x.py",
            "machine": {"cores": 2, "ram_gib": 1.0, "gpu": None}, "versions": {}}
    (tmp_path / "bench_x.json").write_text(json.dumps({"meta": meta, "markdown": "| a |\n|---|\n| 1 |\n"}))
    assert "*" not in results.render(tmp_path).split("## bench_x")[1].split("| a |")[0]
    (tmp_path / "bench_x.json").write_text(json.dumps({"meta": {**meta, "annotation": "cores shared"},
                                                       "markdown": "| a |\n|---|\n| 1 |\n"}))
    page = results.render(tmp_path)
    assert page.index("*cores shared*") < page.index("| a |")
