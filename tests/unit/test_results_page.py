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
