"""Shared test fixtures: synthetic AnnData builders, a loopback HTTP file server, ../shared, Snakemake runs."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# -- ../shared/data ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; skipped only where it is absent outside CI (in CI its absence is a failure)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


# -- synthetic AnnData --------------------------------------------------------------------------------
def make_adata(n_cells: int = 60, n_genes: int = 30, *, counts: bool = True, seed: int = 0,
               targets: tuple[str, ...] = ("GENE1", "GENE2", "GENE3", "GENE1+GENE2"),
               control: str = "non-targeting", pert_col: str = "target_gene",
               genes: list[str] | None = None, cell_types: tuple[str, ...] = ("ctA", "ctB")) -> ad.AnnData:
    """A small perturbation AnnData with NB-like counts (or their log1p) and canonical-ish obs."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(rng.gamma(2.0, 1.0, size=(n_cells, n_genes))).astype(np.float32)
    x[:, 0] += 1  # no empty cells
    labels = [control if i % (len(targets) + 1) == 0 else targets[i % (len(targets) + 1) - 1] for i in range(n_cells)]
    obs = pd.DataFrame({pert_col: labels, "cell_type": [cell_types[i % len(cell_types)] for i in range(n_cells)],
                        "batch": [f"b{(i // 2) % 2}" for i in range(n_cells)]},
                       index=[f"c{i}" for i in range(n_cells)])
    names = genes or ([f"GENE{i}" for i in range(1, n_genes + 1)])
    X = sp.csr_matrix(x)
    if not counts:
        tot = x.sum(1, keepdims=True)
        X = sp.csr_matrix(np.log1p(x / tot * 1e4).astype(np.float32))
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=names))


@pytest.fixture
def adata_factory():
    return make_adata


# -- loopback HTTP server ----------------------------------------------------------------------------
class FileServer:
    """A scripted HTTP server on 127.0.0.1 standing in for dataset hosts (Range-capable, with faults).

    ``files``: URL path -> bytes. ``drop_after``: path -> byte count at which the first response is cut.
    ``fail_first``: path -> number of 503 answers before success. ``requests``: (path, Range header) log.
    ``root``: serve a folder too (used as an http mirror of ../shared/data).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}
        self.ignore_range = False
        self.root: Path | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                data = server.files.get(path)
                if data is None and server.root is not None:
                    f = (server.root / path.lstrip("/")).resolve()
                    if f.is_file() and str(f).startswith(str(server.root.resolve())):
                        data = f.read_bytes()
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.fail_first.get(path, 0) > 0:
                    server.fail_first[path] -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.drop_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server():
    srv = FileServer()
    yield srv
    srv.close()


class ChatServer:
    """A scripted OpenAI-compatible /v1/chat/completions server on 127.0.0.1 (stands in for vLLM/Ollama/OpenAI).

    Per gene (read from the prompt) it plays a script: good, fenced, malformed, wrongkeys, 429, 500, sleep.
    """

    def __init__(self, scripts: dict[str, list[str]] | None = None, facet_names: list[str] | None = None):
        self.facet_names = facet_names
        scripts = scripts or {}
        self.scripts = {g: list(s) for g, s in scripts.items()}
        self.requests: dict[str, int] = defaultdict(int)
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                gene = re.findall(r"Gene text:\n(\S+)", prompt)[-1]
                with srv.lock:
                    srv.requests[gene] += 1
                    srv.bodies.append(body)
                    script = srv.scripts.get(gene, [])
                    action = script.pop(0) if script else "good"
                if action == "sleep":
                    time.sleep(1.5)
                    action = "good"
                if action in ("429", "500"):
                    self.send_response(int(action))
                    if action == "429":
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                names = srv.facet_names or re.findall(r"^- (\w+):", prompt, re.M)
                content = {"good": json.dumps({n: (f"{gene} acts in {n}" if n != "immune_response" else "<NONE>")
                                               for n in names}),
                           "fenced": "```json\n" + json.dumps({n: f"{gene} {n}" for n in names}) + "\n```",
                           "malformed": "{'transcriptional_regulation': oops",
                           "wrongkeys": json.dumps({"transcription": "x"})}[action]
                out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                               "finish_reason": "stop"}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()



# -- Snakemake -----------------------------------------------------------------------------------------
def write_config(workdir: Path, cfg: dict) -> Path:
    """The test's config file. A test that does not choose evaluation.profile scores with VCC 2025 (cell-eval) only:
    cell-eval2's vcc2026 scoring (the default `both`) adds a minute per run, and is tested where it is the subject
    (test_stages123_demo: the default profile; test_vcc2026_* there)."""
    cfg = dict(cfg)
    if "profile" not in (cfg.get("evaluation") or {}):
        cfg["evaluation"] = {**(cfg.get("evaluation") or {}), "profile": "vcc2025"}
    path = workdir / "test_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def with_test_profile(cfg: dict) -> dict:
    """A test's config scores with cell-eval only (evaluation.profile vcc2025) unless it names a profile: cell-eval2's
    vcc2026 scoring costs ~20 s a row and a bundle per dataset, and it is tested where a test asks for it
    (test_stages123_demo and test_vcc_submission run the default profile `both`, test_vcc2026 its parts)."""
    if "profile" in (cfg.get("evaluation") or {}):
        return cfg
    return {**cfg, "evaluation": {**(cfg.get("evaluation") or {}), "profile": "vcc2025"}}


def run_snakemake(workdir: Path, cfg: dict | None = None, *targets: str, extra: tuple[str, ...] = (),
                  check: bool = True, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI on the repository's Snakefile in ``workdir`` (under `timeout -k`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["timeout", "-k", "20", str(timeout), sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--nolock", *extra]
    if cfg is not None:  # last: --configfile takes several values
        cfg = with_test_profile(cfg)
        cmd += ["--configfile", str(write_config(workdir, cfg))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, cwd=workdir,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong", "em", "code", "table",
               "thead", "tbody", "tr", "th", "td", "img", "ul", "li", "a", "pre", "div", "span", "br", "details",
               "summary"}


def read_report(path: Path) -> tuple[str, list[bytes], list[str]]:
    """An HTML report parsed, not grepped: (its text, its decoded inline PNGs, its link targets). Fails when an image
    is not a PNG, a link does not resolve from the page's folder, or a tag is not one the writer emits (a name from
    the data that was not escaped)."""
    import base64
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.imgs, self.links, self.tags = [], [], set()

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            a = dict(attrs)
            if tag == "img":
                src = a.get("src") or ""
                assert src.startswith("data:image/png;base64,"), src[:60]
                self.imgs.append(base64.b64decode(src.split(",", 1)[1]))
            if tag == "a":
                self.links.append(a.get("href") or "")

    text = path.read_text()
    page = Page()
    page.feed(text)
    assert page.tags <= REPORT_TAGS, f"unexpected tags {page.tags - REPORT_TAGS}: unescaped text from the data?"
    assert all(len(b) > 500 and b[:8] == b"\x89PNG\r\n\x1a\n" for b in page.imgs)
    missing = [h for h in page.links if not (path.parent / h).is_file()]
    assert not missing, f"links that do not resolve: {missing}"
    return text, page.imgs, page.links


def _browser(width: int = 1280, height: int = 900):
    """A real headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run) with a ``width`` px wide
    window. Skipped where Chromium is absent, failed under CI."""
    import shutil

    chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chrome and driver):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install chromium and chromium-driver (.ci/run does, with apt-get)")
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.binary_location = chrome
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def open_in_browser(path: Path, width: int = 1280) -> tuple[list[tuple[int, int]], list[dict]]:
    """Open an HTML page in a real headless Chromium: (each image's natural size, the console messages)."""
    return browse(path, width)[:2]


def browse(path: Path, width: int = 1280) -> tuple[list[tuple[int, int]], list[dict], dict[str, int]]:
    """As :func:`open_in_browser`, and the page's layout at ``width`` px: the viewport's width and the document's
    scroll width (wider = the page scrolls sideways), and the right edge of the widest table shown (not in a
    collapsed <details>)."""
    browser = _browser(width)
    try:
        browser.get(path.resolve().as_uri())
        sizes = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete ? i.naturalWidth : 0, i.naturalHeight])")
        layout = browser.execute_script(
            "const t = Array.from(document.querySelectorAll('table')).filter("
            "  e => e.offsetParent !== null && e.closest('details:not([open])') === null);"
            "return {viewport: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,"
            " table_right: Math.max(0, ...t.map(e => Math.ceil(e.getBoundingClientRect().right)))}")
        return [tuple(s) for s in sizes], browser.get_log("browser"), layout
    finally:
        browser.quit()


TINY_DEMO = {  # small, yet models separate: linear < cell_mean < control on MAE (measured)
    "n_genes": 300, "n_single_targets": 20, "n_double_targets": 2, "cells_per_target": 25, "n_control_cells": 80,
}


def fit_killed_after(model: str, hparams: dict, train: Path, knowledge: Path, checkpoint: Path, *,
                     watch: Path | None = None, min_epoch: int = 2, timeout: float = 300) -> int | None:
    """Fit ``model`` in a subprocess and SIGKILL it once checkpoint ``watch`` (default ``checkpoint``) holds
    ``min_epoch`` epochs; returns the epoch it was killed at (None: it finished or timed out first)."""
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from pertpipe.models import build_model\nfrom pertpipe.models.inputs import ModelInputs\n"
            f"m = build_model({model!r}, {hparams!r}, seed=0)\n"
            "m.fit(ModelInputs(sys.argv[1], knowledge=sys.argv[2], checkpoint=sys.argv[3]))\n")
    watch = watch or checkpoint
    proc = subprocess.Popen([sys.executable, "-c", code, str(train), str(knowledge), str(checkpoint)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return kill_at_checkpoint(proc, watch, min_epoch=min_epoch, timeout=timeout)


def kill_at_checkpoint(proc: subprocess.Popen, watch: Path, *, min_epoch: int, timeout: float = 300) -> int | None:
    """SIGKILL ``proc`` and every process it started (torchrun's workers run in their own sessions) once checkpoint
    ``watch`` holds ``min_epoch`` epochs; returns that epoch (None: it finished or timed out first)."""
    import signal

    import psutil
    import torch

    deadline, killed_at = time.time() + timeout, None
    while time.time() < deadline and proc.poll() is None:
        if watch.exists():
            try:
                ep = torch.load(watch, weights_only=True)["epoch"]
            except Exception:  # noqa: BLE001  (being replaced right now)
                ep = 0
            if ep >= min_epoch:
                for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                    p.send_signal(signal.SIGKILL)
                killed_at = ep
                break
        time.sleep(0.05)
    proc.wait()
    time.sleep(0.5)  # the killed workers are gone
    return killed_at


@pytest.fixture(scope="session")
def knowledge_demo(tmp_path_factory) -> dict[str, Path]:
    """The tiny demo through stage 1 and the knowledge stage (the deep models' inputs), built once per test session
    and shared by every workflow test that only reads its outputs (DyGenePT, CFM-VC, data-parallel tests)."""
    wd = tmp_path_factory.mktemp("kdemo")
    os.environ["HF_HUB_OFFLINE"] = "1"
    run_snakemake(wd, {"dataset": "demo", "demo": TINY_DEMO, "stage1": {"chunk_size": 500},
                       "knowledge": {"cache_dir": str(wd / "cache")}}, "stage1", "knowledge")
    res = wd / "results/demo"
    return {"train": res / "stage1/train.h5ad", "val": res / "stage1/val.h5ad",
            "knowledge": res / "knowledge/facet_embeddings.pt", "template": res / "stage1/template.csv", "wd": wd}


def predict_reloaded(model, demo: dict[str, Path], tmp_path: Path):
    """Save ``model``, load it back, predict the template; checks the prediction contract, returns (AnnData, template)."""
    from pertpipe.models import load_model
    from pertpipe.models.predict import write_predictions

    model.save(tmp_path / "model.pt")
    tpl = pd.read_csv(demo["template"])
    write_predictions(load_model(tmp_path / "model.pt"), tpl, demo["train"], tmp_path / "pred.h5ad")
    p = ad.read_h5ad(tmp_path / "pred.h5ad")
    assert p.X.dtype == np.float32 and p.X.min() >= 0 and np.isfinite(p.X).all()
    assert list(p.var_names) == list(ad.read_h5ad(demo["train"], backed="r").var_names)
    assert p.obs.groupby("target_gene").size().to_dict() == tpl.groupby("target_gene")["n_cells"].sum().to_dict()
    return p, tpl


# a user's model module (one file): the registry's unit tests and the plugin workflow test load it
TOY_MODEL = '''
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pertpipe.models.base import PredictsShift, register_model
from pertpipe.core.params import positive


@register_model("toy_shift")
class ToyShift(PredictsShift):
    inputs = ("knowledge",)  # declared: the rule passes the facet tensor, fit reads it

    @dataclass
    class Params:
        size: float = field(default=0.5, metadata={"ge": 0})
        mode: Literal["up", "down"] = "up"
        repeats: int = positive(1)

    def fit(self, inputs):
        if inputs.train is None:
            self.genes = ["A", "B"]
            return {}
        self._summarise(inputs)
        self.facets_read = str(inputs.need("knowledge", "toy_shift"))
        return {"facets_read": self.facets_read}

    def predict_shift(self, target, cell_type):
        return np.full(len(self.genes), self.params.size * (1 if self.params.mode == "up" else -1))

    def state(self):
        return {}

    def set_state(self, state):
        pass
'''

# Markers by folder: a test that runs Snakemake lives in tests/workflow (or tests/real, tests/slurm, which also need
# the reference data / a Slurm), and its folder marks it, so `make test-fast` (not workflow) never runs one.
FOLDER_MARKERS = {"workflow": ("workflow",), "real": ("real", "workflow"), "slurm": ("slurm", "workflow")}


# The order files are handed to the test workers (`make test`: pytest-xdist, a file at a time; the Makefile passes
# --no-loadscope-reorder so that xdist keeps this order instead of sorting files by their number of tests): the
# folders whose files run Snakemake (tens of seconds to minutes each) first, the many short unit files last, so the
# two workers finish together instead of one waiting while the other runs a long pipeline file it drew at the end.
FOLDER_ORDER = {"slurm": 0, "workflow": 1, "real": 2}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        folder = Path(str(item.fspath)).parent.name
        for mark in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(getattr(pytest.mark, mark))
    items.sort(key=lambda item: FOLDER_ORDER.get(Path(str(item.fspath)).parent.name, len(FOLDER_ORDER)))
