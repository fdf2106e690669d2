"""`pip install .` gives the whole library: a wheel built from the checkout, installed into a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

SUBPACKAGES = ["pertpipe.data", "pertpipe.knowledge", "pertpipe.models", "pertpipe.models.modules",
               "pertpipe.models.peers", "pertpipe.evaluation", "pertpipe.spatial"]


@pytest.mark.slow
def test_wheel_installs_every_subpackage_and_the_console_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "pertpipe", src / "pertpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "dist")], check=True, env=env, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("pertpipe-*.whl"))
    # system site-packages give the dependencies; the venv's own site-packages hold only the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True)
    py = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   env=env, cwd=tmp_path)
    code = ("import importlib, pkgutil, pertpipe; "
            "mods = [m.name for m in pkgutil.walk_packages(pertpipe.__path__, 'pertpipe.')]; "
            "[importlib.import_module(m) for m in mods if not m.endswith('__main__')]; "
            "print(pertpipe.__file__); print(' '.join(sorted(mods)))")
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    file, mods = out.stdout.splitlines()
    assert file.startswith(str(tmp_path / "venv")), file  # the installed copy, not the checkout
    for sub in SUBPACKAGES + ["pertpipe.data.inspect", "pertpipe.data.sources", "pertpipe.models.shrinkage",
                              "pertpipe.models.prior", "pertpipe.models.peers.gears", "pertpipe.tasks",
                              "pertpipe.spatial.metrics", "pertpipe.cli"]:
        assert sub in mods.split()
    cli = subprocess.run([str(tmp_path / "venv" / "bin" / "pertpipe"), "inspect", "--help"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert cli.returncode == 0 and "--write-config" in cli.stdout
