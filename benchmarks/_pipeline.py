"""What the pipeline benchmarks share: one Snakemake run (target `all` unless told) in a working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_all(wd: Path, cfg: dict, target: str = "all") -> subprocess.CompletedProcess:
    """Write ``cfg`` to ``wd/cfg.yaml`` and run ``target`` of the pipeline there (2 cores, offline text encoder)."""
    (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--cores", "2",
                           "--directory", str(wd), "--configfile", str(wd / "cfg.yaml")],
                          capture_output=True, text=True, env=env)
