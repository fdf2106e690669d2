"""E-utilities esummary on a loopback server: summaries, cache, rate limit."""

import json
import time

from pertpipe.knowledge.ncbi import fetch_summaries


def test_summaries_fetched_cached_and_rate_limited(file_server, tmp_path):
    calls = []

    def result(ids):
        return {"result": {"uids": ids, **{i: {"uid": i, "summary": f"summary of {i}" if i != "3" else ""}
                                           for i in ids}}}
    # serve any esummary URL by recording the ids asked for
    srv = file_server
    orig = srv.httpd.RequestHandlerClass.do_GET

    def do_get(handler):
        if handler.path.startswith("/eutils/esummary.fcgi"):
            from urllib.parse import parse_qs, urlparse
            ids = parse_qs(urlparse(handler.path).query)["id"][0].split(",")
            calls.append((time.monotonic(), ids))
            body = json.dumps(result(ids)).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        orig(handler)
    srv.httpd.RequestHandlerClass.do_GET = do_get
    cache = tmp_path / "s.json"
    out = fetch_summaries([1, 2, 3, 4, 5], cache_path=cache, base_url=srv.url("eutils"), rate=3.0, batch=2)
    assert out == {1: "summary of 1", 2: "summary of 2", 3: "", 4: "summary of 4", 5: "summary of 5"}
    assert [c[1] for c in calls] == [["1", "2"], ["3", "4"], ["5"]]
    gaps = [b[0] - a[0] for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= 1 / 3 - 0.02  # at most 3 requests per second
    n = len(calls)
    again = fetch_summaries([1, 5, 6], cache_path=cache, base_url=srv.url("eutils"), rate=3.0)
    assert again[1] == "summary of 1" and len(calls) == n + 1 and calls[-1][1] == ["6"]  # only the new id


def test_an_api_key_never_reaches_the_message_or_the_log(file_server, tmp_path, monkeypatch):
    """NCBI answers 500 with NCBI_API_KEY set: the error and the rule's log (urllib3's retry warnings quote the
    request URL) name the endpoint but not the key."""
    import logging

    import pytest

    from pertpipe.io import script_step

    secret = "k3y-0123456789abcdef"
    monkeypatch.setenv("NCBI_API_KEY", secret)
    seen = []

    def do_get(handler):
        seen.append(handler.path)
        handler.send_response(500)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    file_server.httpd.RequestHandlerClass.do_GET = do_get
    log_file = tmp_path / "knowledge.log"
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        with pytest.raises(SystemExit), script_step(log_file, "gene_text"):
            fetch_summaries([1, 2], cache_path=tmp_path / "s.json", base_url=file_server.url("eutils"), retries=1)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
    assert any(f"api_key={secret}" in p for p in seen)  # the key was sent to the server ...
    text = log_file.read_text()
    assert "E-utilities esummary" in text and "500" in text  # ... the failure is logged with its cause ...
    assert secret not in text and "esummary.fcgi" not in text  # ... without the key (the URL is not quoted)


def test_a_refused_key_is_one_short_line_that_does_not_claim_retries(file_server, tmp_path, monkeypatch):
    """NCBI answers 403 to a key held in a variable whose name says nothing of keys (api_key_env: NCBI_CRED): the
    error is one line that names the status and the fix, not the 2,000-character request URL; 403 is not retried,
    so it does not say it was; the key is nowhere."""
    import pytest

    from pertpipe.errors import DownloadError

    secret = "cr3d-0123456789abcdef"
    monkeypatch.setenv("NCBI_CRED", secret)
    calls = []

    def do_get(handler):
        calls.append(handler.path)
        handler.send_response(403)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    file_server.httpd.RequestHandlerClass.do_GET = do_get
    with pytest.raises(DownloadError) as err:
        fetch_summaries(list(range(1, 400)), cache_path=tmp_path / "s.json", base_url=file_server.url("eutils"),
                        retries=3, api_key_env="NCBI_CRED")
    msg = str(err.value)
    assert len(calls) == 1 and secret in calls[0]  # asked once, with the key
    assert "HTTP 403" in msg and "retries" not in msg and "api_key" in msg and "esummary.fcgi" not in msg
    assert secret not in msg and len(msg) < 400 and "\n" not in msg
