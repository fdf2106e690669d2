"""The LLM facet extractor against a scripted OpenAI-compatible chat-completions server on 127.0.0.1.

The server stands in for vLLM/Ollama/OpenAI (an outside service that cannot be reached here). For each
gene it plays a script of answers: a good JSON reply, malformed JSON, wrong keys, HTTP 429 or 500, or a
reply slower than the client's timeout.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import REPO, ChatServer

from pertpipe.knowledge.facets import NONE, Facet
from pertpipe.knowledge.llm import LLMError, LLMSettings, MalformedReply, llm_facets, parse_reply

FACETS = [Facet("transcriptional_regulation", "transcription", ("GO:0006355",)),
          Facet("cell_death_survival", "death", ("GO:0008219",)),
          Facet("immune_response", "immune", ("GO:0006955",))]
NAMES = [f.name for f in FACETS]
TEMPLATE = (REPO / "resources/prompts/facets.md").read_text()


def genes(*names):
    return pd.DataFrame({"gene": list(names), "text": [f"{g} (protein {g})\nBiological process: something" for g in names]})


def settings(url, **kw):
    return LLMSettings(base_url=url, model="test-model", concurrency=2, retries=2, timeout=1.0, backoff=0.01, **kw)


def test_replies_retries_and_failures(tmp_path):
    srv = ChatServer(facet_names=NAMES, scripts={"GOOD": ["good"], "FENCE": ["fenced"], "MALF": ["malformed", "good"], "RATE": ["429", "good"],
                      "SLOW": ["sleep", "good"], "ERR5": ["500", "500", "good"],
                      "BAD": ["wrongkeys"] * 10})
    try:
        table, prov = llm_facets(genes("GOOD", "FENCE", "MALF", "RATE", "SLOW", "ERR5", "BAD"), FACETS,
                                 settings(srv.base_url), template=TEMPLATE, cache_dir=tmp_path)
    finally:
        srv.close()
    t = table.set_index(["gene", "facet"])
    assert t.loc[("GOOD", "transcriptional_regulation"), "text"] == "GOOD acts in transcriptional_regulation"
    assert t.loc[("GOOD", "immune_response"), "text"] == NONE
    assert t.loc[("FENCE", "cell_death_survival"), "text"] == "FENCE cell_death_survival"
    for g in ("MALF", "RATE", "SLOW", "ERR5"):
        assert t.loc[(g, "cell_death_survival"), "source"] == "llm"
    assert srv.requests["MALF"] == 2 and srv.requests["RATE"] == 2 and srv.requests["ERR5"] == 3
    assert srv.requests["SLOW"] >= 2  # the slow reply timed out and was asked again
    # a reply that never validates is a recorded failure with its reason, not a crash
    assert (t.loc["BAD", "source"] == "llm_failed").all() and (t.loc["BAD", "text"] == NONE).all()
    assert "keys" in prov["failures"]["BAD"] and prov["model"] == "test-model" and len(prov["prompt_hash"]) == 16
    body = srv.bodies[0]
    assert body["model"] == "test-model" and body["response_format"] == {"type": "json_object"}
    assert "immune_response: immune" in body["messages"][0]["content"]


def test_resume_asks_only_unfinished_genes(tmp_path):
    srv = ChatServer(facet_names=NAMES)
    try:
        llm_facets(genes("A1", "A2"), FACETS, settings(srv.base_url), template=TEMPLATE, cache_dir=tmp_path)
        assert dict(srv.requests) == {"A1": 1, "A2": 1}
        table, prov = llm_facets(genes("A1", "A2", "A3", "A4"), FACETS, settings(srv.base_url), template=TEMPLATE,
                                 cache_dir=tmp_path)
        assert dict(srv.requests) == {"A1": 1, "A2": 1, "A3": 1, "A4": 1}
        assert prov["from_cache"] == 2 and prov["requested"] == 2 and len(table) == 4 * len(FACETS)
        # another model or prompt is another cache key
        llm_facets(genes("A1"), FACETS, LLMSettings(base_url=srv.base_url, model="other", retries=0, timeout=1),
                   template=TEMPLATE, cache_dir=tmp_path)
        assert srv.requests["A1"] == 2
    finally:
        srv.close()


def test_endpoint_down_is_a_clear_error_and_keeps_the_cache(tmp_path):
    srv = ChatServer(facet_names=NAMES)
    llm_facets(genes("K1"), FACETS, settings(srv.base_url), template=TEMPLATE, cache_dir=tmp_path)
    url = srv.base_url
    srv.close()  # the server goes away
    with pytest.raises(LLMError) as err:
        llm_facets(genes("K1", "K2", "K3"), FACETS, settings(url), template=TEMPLATE, cache_dir=tmp_path)
    msg = str(err.value)
    assert url in msg and "re-run to resume" in msg and "1 of 3 genes are cached" in msg
    assert len(list(tmp_path.rglob("K1.json"))) == 1 and not list(tmp_path.rglob("K2.json"))


def test_parse_reply_validation():
    good = json.dumps({n: "x" for n in NAMES})
    assert parse_reply(good, NAMES) == {n: "x" for n in NAMES}
    for bad, words in (("[1, 2]", "expected an object"), ("{", "not JSON"),
                       (json.dumps({**{n: "x" for n in NAMES}, "extra": "y"}), "keys"),
                       (json.dumps({**{n: "x" for n in NAMES}, NAMES[0]: 3}), "not a non-empty string")):
        with pytest.raises(MalformedReply, match=words):
            parse_reply(bad, NAMES)


def test_a_credential_the_server_echoes_is_redacted_whatever_its_variable_is_called(tmp_path, monkeypatch):
    """knowledge.llm.api_key_env: LLM_CRED (a name that does not say "key"): the endpoint refuses and echoes the
    Authorization header; neither the error nor the rule's log holds the credential."""
    import http.server
    import logging
    import threading

    import pandas as pd
    import pytest

    from pertpipe.io import script_step
    from pertpipe.knowledge.llm import LLMSettings, llm_facets

    secret = "s3cr3t-0123456789"
    monkeypatch.setenv("LLM_CRED", secret)

    class Echo(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = f"invalid credential: {self.headers.get('Authorization')}".encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    log_file = tmp_path / "facets.log"
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        settings = LLMSettings(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", model="m",
                               api_key_env="LLM_CRED", retries=0)
        texts = pd.DataFrame({"gene": ["GENE1"], "text": ["GENE1 binds DNA."]})
        with pytest.raises(SystemExit), script_step(log_file, "facets"):
            llm_facets(texts, FACETS, settings, template=TEMPLATE, cache_dir=tmp_path / "cache")
    finally:
        srv.shutdown()
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved:
            root.addHandler(h)
    text = log_file.read_text()
    assert "401" in text and "invalid credential" in text and secret not in text and "[REDACTED]" in text
