"""Optional NCBI RefSeq gene summaries via E-utilities ``esummary`` (off by default; cached; <= 3 requests/s)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests

from pertpipe.errors import DownloadError, register_secret
from pertpipe.http_session import RETRY_STATUS, retrying_session
from pertpipe.io import atomic_path

EUTILS = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils"


def fetch_summaries(gene_ids: list[int], *, cache_path: str | os.PathLike, base_url: str = EUTILS,
                    rate: float = 3.0, batch: int = 200, api_key_env: str | None = "NCBI_API_KEY",
                    timeout: float = 30.0, retries: int = 3) -> dict[int, str]:
    """GeneID -> RefSeq summary ('' when NCBI has none); cached in ``cache_path`` so re-runs ask only for new ids."""
    cache_path = Path(cache_path)
    cache: dict[str, str] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    todo = sorted({int(g) for g in gene_ids if g >= 0 and str(int(g)) not in cache})
    key = os.environ.get(api_key_env or "", "")
    register_secret(key)  # whatever the variable is called, its value never reaches a message or a log
    min_gap = 1.0 / rate
    last = 0.0
    sess = retrying_session(retries=retries, backoff=1.0, max_backoff=10.0)  # 429/5xx/transport retried there
    for i in range(0, len(todo), batch):
        ids = todo[i:i + batch]
        params = {"db": "gene", "id": ",".join(map(str, ids)), "retmode": "json"}
        if key:
            params["api_key"] = key
        wait = min_gap - (time.monotonic() - last)
        if wait > 0:
            time.sleep(wait)
        last = time.monotonic()
        cached = f"{len(cache)} summaries are cached in {cache_path}"
        try:  # messages never quote the request URL: it holds the ids (thousands of characters) and the key
            resp = sess.get(f"{base_url.rstrip('/')}/esummary.fcgi", params=params, timeout=timeout)
        except requests.RequestException as exc:
            raise DownloadError(f"E-utilities esummary at {base_url} could not be reached after {retries} retries "
                                f"({type(exc).__name__}); {cached}. Fix: retry later, or set "
                                "knowledge.summaries.enabled: false") from None
        if resp.status_code >= 400:
            tried = f" after {retries} retries" if resp.status_code in RETRY_STATUS else ""
            fix = ("check the API key in the variable knowledge.summaries.api_key_env names, or remove it"
                   if resp.status_code in (400, 401, 403) else "retry later")
            raise DownloadError(f"E-utilities esummary at {base_url} answered HTTP {resp.status_code} "
                                f"{resp.reason}{tried} for a batch of {len(ids)} gene ids; {cached}. Fix: {fix}, or "
                                "set knowledge.summaries.enabled: false")
        try:
            result = resp.json()["result"]
        except (ValueError, KeyError):
            raise DownloadError(f"E-utilities esummary at {base_url} answered HTTP {resp.status_code} with "
                                f"something that is not an esummary result; {cached}. Fix: check "
                                "knowledge.summaries.base_url, or set knowledge.summaries.enabled: false") from None
        for g in ids:
            cache[str(g)] = (result.get(str(g)) or {}).get("summary", "") or ""
        with atomic_path(cache_path) as tmp:
            tmp.write_text(json.dumps(cache, sort_keys=True))
    return {int(g): cache.get(str(int(g)), "") for g in gene_ids if g >= 0}
