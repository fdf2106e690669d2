"""One HTTP session with retries for every outside service (downloads, the LLM endpoint, NCBI E-utilities).

Retries are urllib3's ``Retry`` on a requests session: connection errors, read time-outs and the statuses
429/408/425/500/502/503/504 are retried with exponential backoff (``backoff · 2^(n-1)`` seconds, at most
``max_backoff``), honouring ``Retry-After``. After the last try the final response is returned (not raised), so
callers still see its status and can say what failed.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)


def retrying_session(*, retries: int, backoff: float, max_backoff: float = 30.0,
                     methods: tuple[str, ...] = ("GET", "HEAD", "POST")) -> requests.Session:
    """A :class:`requests.Session` whose http(s) adapters retry as described in the module docstring."""
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=0,
                  backoff_factor=backoff, backoff_max=max_backoff, status_forcelist=RETRY_STATUS,
                  allowed_methods=frozenset(methods), respect_retry_after_header=True, raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
