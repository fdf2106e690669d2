"""Facet extraction with an LLM behind an OpenAI-compatible ``/chat/completions`` endpoint.

Works with vLLM, Ollama, llama.cpp server and OpenAI (``base_url`` ends in ``/v1``). One request per gene
with the few-shot prompt of ``resources/prompts/facets.md``; the reply must be one JSON object with exactly
the K facet names as keys (``<NONE>`` where the text says nothing). Malformed replies are retried, then
recorded as failures with the reason; 429/5xx/timeouts/connection errors are retried with exponential
backoff (``Retry-After`` honoured). Every finished gene is cached on disk under a key of gene, prompt hash
and model, so an interrupted run resumes where it stopped; an endpoint that stays down stops the run with
a message saying how many genes are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from pertpipe.errors import PertpipeError, register_secret
from pertpipe.http_session import RETRY_STATUS, retrying_session
from pertpipe.io import atomic_path
from pertpipe.knowledge.types import NONE, Facet


class LLMError(PertpipeError):
    """The endpoint could not be used (down, refusing, misconfigured)."""


class MalformedReply(Exception):
    pass


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 4
    retries: int = 3
    timeout: float = 60.0
    backoff: float = 1.0
    temperature: float = 0.0
    json_mode: bool = True


def render_prompt(template: str, facets: list[Facet], gene_text: str) -> str:
    listing = "\n".join(f"- {f.name}: {f.description}" for f in facets)
    example = json.dumps({f.name: ("Arrests the cell cycle in G1 by inhibiting cyclin-dependent kinases, downstream of "
                                   "p53 after DNA damage." if "cycle" in f.name else NONE) for f in facets})
    return template.replace("{facets}", listing).replace("{example}", example).replace("{gene_text}", gene_text)


def prompt_hash(template: str, facets: list[Facet]) -> str:
    blob = template + "\n" + json.dumps([(f.name, f.description) for f in facets])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_reply(content: str, facet_names: list[str]) -> dict[str, str]:
    """The facet dict of a reply, or :class:`MalformedReply` saying what is wrong."""
    text = content.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"not JSON ({exc.msg} at char {exc.pos}): {content[:80]!r}") from exc
    if not isinstance(obj, dict):
        raise MalformedReply(f"JSON is a {type(obj).__name__}, expected an object")
    keys = set(obj)
    if keys != set(facet_names):
        raise MalformedReply(f"keys {sorted(keys)} != facets {sorted(facet_names)}")
    out = {}
    for k in facet_names:
        v = obj[k]
        if not isinstance(v, str) or not v.strip():
            raise MalformedReply(f"facet '{k}' is not a non-empty string")
        out[k] = NONE if v.strip().upper() in ("<NONE>", "NONE") else v.strip()
    return out


class _EndpointDown(Exception):
    pass


def _chat(session: requests.Session, s: LLMSettings, prompt: str, headers: dict[str, str]) -> str:
    """One completion with retries on transport errors and 429/5xx; returns the message content."""
    url = s.base_url.rstrip("/") + "/chat/completions"
    body: dict[str, Any] = {"model": s.model, "temperature": s.temperature,
                            "messages": [{"role": "user", "content": prompt}]}
    if s.json_mode:
        body["response_format"] = {"type": "json_object"}
    try:  # transport errors and 429/5xx are retried by the session (pertpipe.http_session)
        resp = session.post(url, json=body, headers=headers, timeout=s.timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _EndpointDown(f"{type(exc).__name__} after {s.retries} retries") from exc
    if resp.status_code in RETRY_STATUS:
        raise _EndpointDown(f"HTTP {resp.status_code} after {s.retries} retries")
    if resp.status_code >= 400:
        raise LLMError(f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}. Fix: check knowledge.llm."
                       "base_url, model and the API key variable")
    try:
        return resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise MalformedReply(f"not a chat-completions response: {resp.text[:80]!r}") from exc


def llm_facets(gene_texts: pd.DataFrame, facets: list[Facet], settings: LLMSettings, *, template: str,
               cache_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Facet table (gene, facet, text, source) for every gene, using and filling the per-gene cache."""
    names = [f.name for f in facets]
    ph = prompt_hash(template, facets)
    model_slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.model)
    cdir = Path(cache_dir) / model_slug / ph
    cdir.mkdir(parents=True, exist_ok=True)
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(settings.api_key_env or "", "")
    register_secret(key)  # whatever the variable is called (api_key_env), its value is redacted everywhere
    if key:
        headers["Authorization"] = f"Bearer {key}"
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for g, text in zip(gene_texts["gene"], gene_texts["text"]):
        f = cdir / f"{g}.json"
        if f.exists():
            results[g] = json.loads(f.read_text())
        else:
            todo.append((g, text))
    cached = len(results)
    stop = threading.Event()
    local = threading.local()

    def work(gene: str, text: str) -> dict[str, Any]:
        if stop.is_set():
            raise _EndpointDown("stopped")
        sess = getattr(local, "session", None)
        if sess is None:
            sess = local.session = retrying_session(retries=settings.retries, backoff=settings.backoff)
        prompt = render_prompt(template, facets, text)
        reasons = []
        for _ in range(settings.retries + 1):
            try:
                content = _chat(sess, settings, prompt, headers)
                rec = {"gene": gene, "facets": parse_reply(content, names), "status": "ok"}
                break
            except MalformedReply as exc:
                reasons.append(str(exc))
        else:
            rec = {"gene": gene, "facets": {n: NONE for n in names}, "status": "failed", "reason": reasons[-1],
                   "attempts": len(reasons)}
        rec.update(model=settings.model, prompt_hash=ph, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with atomic_path(cdir / f"{gene}.json") as tmp:
            tmp.write_text(json.dumps(rec, sort_keys=True))
        return rec

    down: str | None = None
    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        futures = {pool.submit(work, g, t): g for g, t in todo}
        for fut in as_completed(futures):
            try:
                results[futures[fut]] = fut.result()
            except _EndpointDown as exc:
                down = down or str(exc)
                stop.set()
    if down is not None:
        raise LLMError(f"LLM endpoint {settings.base_url} unreachable after {settings.retries + 1} tries ({down}). "
                       f"{len(results)} of {len(gene_texts)} genes are cached in {cdir}; re-run to resume from there. "
                       "Fix: start the server or correct knowledge.llm.base_url")
    rows, failures = [], {}
    for g in gene_texts["gene"]:
        rec = results[g]
        src = "llm" if rec["status"] == "ok" else "llm_failed"
        if rec["status"] != "ok":
            failures[g] = rec.get("reason", "")
        for n in names:
            rows.append((g, n, rec["facets"].get(n, NONE), src))
    prov = {"model": settings.model, "base_url": settings.base_url, "prompt_hash": ph, "from_cache": cached,
            "requested": len(todo), "failures": failures, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return pd.DataFrame(rows, columns=["gene", "facet", "text", "source"]), prov
