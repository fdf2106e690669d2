"""`pip install .` gives the whole library: a wheel built from the checkout, installed into a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SUBPACKAGES = ["pertpipe.data", "pertpipe.knowledge", "pertpipe.models", "pertpipe.models.modules",
               "pertpipe.models.peers", "pertpipe.evaluation", "pertpipe.spatial"]


def venv_over(python: str | os.PathLike, dest: os.PathLike) -> Path:
    """A fresh venv at ``dest`` whose dependencies are those ``python`` sees: the venv's own site-packages plus a .pth
    naming ``python``'s site-packages. (``--system-site-packages`` would name the *base* interpreter's folder: from
    inside a user's venv that is not where the packages are.)"""
    subprocess.run([str(python), "-m", "venv", str(dest)], check=True)
    code = "import json, site; print(json.dumps(site.getsitepackages()))"
    theirs = json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                                       text=True).stdout)
    py = Path(dest) / "bin" / "python"
    own = json.loads(subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout)[0]
    # addsitedir, not a bare path: the .pth files in those folders count too (a venv chained onto another)
    Path(own, "_pertpipe_test_deps.pth").write_text(f"import site; list(map(site.addsitedir, {theirs!r}))\n")
    return py


def _wheel(tmp_path: Path, env: dict) -> Path:
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "pertpipe", src / "pertpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "dist")], check=True, env=env, cwd=tmp_path)
    return next((tmp_path / "dist").glob("pertpipe-*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("outer", ["interpreter", "user venv"])
def test_wheel_installs_every_subpackage_and_the_console_command(tmp_path, outer):
    """From the interpreter the tests run with, and from inside a user's venv (a package only that venv has must be
    seen: `make test` run in a venv)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheel = _wheel(tmp_path, env)
    python: str | Path = sys.executable
    if outer == "user venv":  # the user's venv: the test's packages, and one that only this venv holds
        python = venv_over(sys.executable, tmp_path / "user")
        site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                              capture_output=True, text=True).stdout.strip()
        Path(site, "only_in_the_user_venv.py").write_text("OK = True\n")
    py = venv_over(python, tmp_path / "venv")  # the venv holds only the wheel; dependencies come from `python`
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   env=env, cwd=tmp_path)
    code = ("import importlib, pkgutil, pertpipe, h5py; "
            "mods = [m.name for m in pkgutil.walk_packages(pertpipe.__path__, 'pertpipe.')]; "
            "[importlib.import_module(m) for m in mods if not m.endswith('__main__')]; "
            "print(pertpipe.__file__); print(' '.join(sorted(mods)))")
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    file, mods = out.stdout.splitlines()
    assert file.startswith(str(tmp_path / "venv")), file  # the installed copy, not the checkout
    for sub in SUBPACKAGES + ["pertpipe.data.inspect", "pertpipe.data.sources", "pertpipe.models.shrinkage",
                              "pertpipe.models.prior", "pertpipe.models.peers.gears", "pertpipe.tasks",
                              "pertpipe.evaluation.spatial", "pertpipe.cli", "pertpipe.evaluation.tool_batch"]:
        assert sub in mods.split()
    if outer == "user venv":
        subprocess.run([str(py), "-c", "import only_in_the_user_venv"], check=True, env=env, cwd=tmp_path)
    cli = subprocess.run([str(tmp_path / "venv" / "bin" / "pertpipe"), "inspect", "--help"], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert cli.returncode == 0 and "--write-config" in cli.stdout


PEERS_AND_SPATIAL = {"cell-gears", "torch-geometric", "arc-state", "cell-load", "tangram-sc", "scvi-tools",
                     "lightning", "pytorch-lightning", "pyro-ppl", "jax"}


def _pins(path):
    """Exact pins of a requirements file, following ``-r`` includes."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(_pins(path.parent / line[3:].strip()))
        elif line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: '{line}' is not an exact pin"
            out[name.strip()] = version.strip()
    return out


def _closure(names):
    """Every distribution pip installs for ``names`` at the installed versions (their requirements, recursively,
    extras only where asked), read from the installed packages' metadata."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, frozenset] = {}
    todo = [(n, frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def test_make_run_installs_no_peer_or_spatial_package():
    """`make run` installs the core lock (requirements.txt): neither it nor anything it pulls in is a package of the
    `peers` or `spatial` extras (arc-state is non-commercial); `make test` installs those from requirements-test.txt."""
    core, full = _pins(REPO / "requirements.txt"), _pins(REPO / "requirements-test.txt")
    closure = _closure(core)
    assert "cell-eval" in closure and "snakemake" in closure and "torch" in closure
    assert not closure & PEERS_AND_SPATIAL, sorted(closure & PEERS_AND_SPATIAL)
    assert {"arc-state", "cell-gears", "tangram-sc", "scvi-tools", "pytest"} <= set(full)
    assert all(full[k] == v for k, v in core.items())  # the test tier adds to the core lock, changes nothing
    make = subprocess.run(["make", "-n", "-B", "run"], cwd=REPO, capture_output=True, text=True).stdout
    assert "-r requirements.txt" in make and "requirements-test.txt" not in make
