"""The rerank service on a real uvicorn server on 127.0.0.1, called with a real HTTP
client (httpx): the Cohere/Jina request shape, METEORA's /v1/select, limits and errors
as 4xx JSON, the API key, micro-batching of concurrent requests, and `meteora serve`
itself as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from helpers_integrations import BEST, CORPUS, QUERY, FlagDogs, keyword_reranker  # noqa: E402

from meteora.errors import InvalidInputError  # noqa: E402
from meteora.relevance import relevance_score  # noqa: E402
from meteora.reranker import Reranker  # noqa: E402
from meteora.server.app import create_app  # noqa: E402
from meteora.server.run import BackgroundServer  # noqa: E402
from meteora.server.settings import ServeSettings  # noqa: E402

TEXTS = [c["text"] for c in CORPUS]


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(create_app(keyword_reranker(), ServeSettings(max_documents=20, max_document_chars=500,
                                                                      max_body_bytes=20_000))) as srv:
        yield srv


def _post(server, path, body, **kw):
    """POST ``body`` as JSON (ASCII, so a lone surrogate travels as the escape ``\\ud800``)."""
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    return httpx.post(server.url + path, content=json.dumps(body), headers=headers, timeout=30, **kw)


def _error(resp, status):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert "Traceback" not in resp.text
    return resp.json()["error"]["message"]


def test_health_and_models(server):
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "meteora"
    card = httpx.get(server.url + "/v1/models").json()["data"][0]
    assert card["id"] == "meteora" and card["rationales"] == "query-only" and card["evidence_scorer"] is False


def test_cohere_shaped_rerank(server):
    body = {"model": "rerank-english-v3.0", "query": QUERY, "documents": TEXTS, "top_n": 3,
            "return_documents": True, "max_chunks_per_doc": 10}
    out = _post(server, "/v1/rerank", body).json()
    results = out["results"]
    assert out["model"] == "meteora" and out["id"] and len(results) == 3
    assert results[0]["index"] == BEST and results[0]["selected"] is True
    assert results[0]["document"] == {"text": TEXTS[BEST]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    direct = keyword_reranker().rerank(QUERY, TEXTS)
    assert [r["index"] for r in results] == [int(h.id) for h in direct.ranked[:3]]
    assert scores == pytest.approx([relevance_score(h.score, direct.score_scale) for h in direct.ranked[:3]])
    assert all(0.0 <= x <= 1.0 for x in scores)
    assert [r["score"] for r in results] == pytest.approx([h.score for h in direct.ranked[:3]])
    # Jina-style document objects, the Cohere v2 path, no documents back by default
    v2 = _post(server, "/v2/rerank", {"query": QUERY, "documents": [{"text": t} for t in TEXTS]}).json()
    assert len(v2["results"]) == len(TEXTS) and "document" not in v2["results"][0]
    assert [r["index"] for r in v2["results"]] == [int(h.id) for h in direct.ranked]


def test_tei_shaped_rerank(server):
    out = _post(server, "/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True, "raw_scores": False}).json()
    assert isinstance(out, list) and len(out) == len(TEXTS)
    assert out[0] == {"index": BEST, "score": pytest.approx(out[0]["score"]), "text": TEXTS[BEST]}
    assert [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)
    assert "text" not in _post(server, "/rerank", {"query": QUERY, "texts": TEXTS}).json()[0]
    direct = keyword_reranker().rerank(QUERY, TEXTS)
    assert [r["score"] for r in out] == pytest.approx([relevance_score(h.score, direct.score_scale) for h in direct.ranked])
    raw = _post(server, "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    assert [r["score"] for r in raw] == pytest.approx([h.score for h in direct.ranked])


def test_rank_fields_and_max_tokens_per_doc_are_honoured(server):
    """Cohere's structured documents: the fields named in rank_fields are ranked, in
    order, as 'field: value' lines; max_tokens_per_doc cuts each text before ranking;
    the documents come back as sent."""
    docs = [{"title": f"Study {i}", "abstract": t, "year": 2020 + i} for i, t in enumerate(TEXTS)]
    body = {"query": QUERY, "documents": docs, "rank_fields": ["title", "abstract"], "return_documents": True}
    out = _post(server, "/v2/rerank", body).json()["results"]
    direct = keyword_reranker().rerank(QUERY, [f"title: {d['title']}\nabstract: {d['abstract']}" for d in docs])
    assert [r["index"] for r in out] == [int(h.id) for h in direct.ranked]
    assert out[0]["index"] == BEST and out[0]["document"] == docs[BEST]
    # only the title is read: the scores are those of the title lines alone
    titles = _post(server, "/v1/rerank", {**body, "rank_fields": ["title"]}).json()["results"]
    only_titles = keyword_reranker().rerank(QUERY, [f"title: {d['title']}" for d in docs])
    assert [r["index"] for r in titles] == [int(h.id) for h in only_titles.ranked]
    assert [r["score"] for r in titles] == pytest.approx([h.score for h in only_titles.ranked])
    # the first 2 words of each text ("Aspirin lowered", "Dogs with", ...): only the best one keeps its keyword
    cut = _post(server, "/v1/rerank", {"query": QUERY, "documents": TEXTS, "max_tokens_per_doc": 2}).json()["results"]
    expect = keyword_reranker().rerank(QUERY, [" ".join(t.split()[:2]) for t in TEXTS])
    assert [r["score"] for r in cut] == pytest.approx([h.score for h in expect.ranked])
    assert cut[0]["index"] == BEST and cut[0]["score"] < out[0]["score"]


def test_the_cohere_sdk_works_unchanged(server):
    """Cohere's own Python client (v1 and v2 APIs), pointed at the service."""
    cohere = pytest.importorskip("cohere")
    direct = keyword_reranker().rerank(QUERY, TEXTS)
    v2 = cohere.ClientV2(api_key="unused", base_url=server.url, max_retries=0, timeout=30)
    out = v2.rerank(model="rerank-v3.5", query=QUERY, documents=TEXTS, top_n=3)
    assert [r.index for r in out.results] == [int(h.id) for h in direct.ranked[:3]]
    assert out.results[0].relevance_score == pytest.approx(relevance_score(direct.ranked[0].score, direct.score_scale))
    v1 = cohere.Client(api_key="unused", base_url=server.url, max_retries=0, timeout=30)
    old = v1.rerank(model="rerank-english-v3.0", query=QUERY, documents=[{"text": t} for t in TEXTS],
                    top_n=2, return_documents=True)
    assert [r.index for r in old.results] == [int(h.id) for h in direct.ranked[:2]]
    assert old.results[0].document.text == TEXTS[BEST]


def test_select_gives_the_selection_the_ranking_and_reasons(server):
    docs = [{"text": t, "id": f"p{i}", "doc_id": c["doc_id"], "position": 0, "source": "toy"} for i, (t, c) in enumerate(zip(TEXTS, CORPUS, strict=True))]
    out = _post(server, "/v1/select", {"query": QUERY, "documents": docs, "explain": True}).json()
    assert out["selected"][0]["id"] == f"p{BEST}" and out["selected"][0]["index"] == BEST
    assert out["selected"][0]["reason"].startswith("selected")
    assert out["rationales"] == [QUERY] and out["fallback"] is False
    assert len(out["ranking"]) == len(TEXTS) and out["ranking"][0]["rank"] == 1
    assert any(r["reason"].startswith("not selected") for r in out["ranking"])
    assert "Selected" in out["explanation"] and out["selection"]["selected_ids"][0] == f"p{BEST}"
    terse = _post(server, "/v1/select", {"query": QUERY, "documents": TEXTS}).json()
    assert "explanation" not in terse and terse["selected"][0]["text"] == TEXTS[BEST]


def test_select_reports_conflicts():
    with BackgroundServer(create_app(keyword_reranker(verifier=FlagDogs()))) as srv:
        docs = [{"text": t, "id": f"p{i}"} for i, t in enumerate(TEXTS)]
        out = _post(srv, "/v1/select", {"query": QUERY, "documents": docs}).json()
    [conflict] = out["conflicts"]
    assert conflict["sides"] == {"effect": [f"p{BEST}"], "no effect": ["p1", "p4"]} and conflict["dropped"] == ["p1", "p4"]
    assert conflict["reason"] == "about dogs"
    assert [r["reason"] for r in out["ranking"] if r["id"] == "p1"][0].startswith("not selected: the verifier dropped")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"query": QUERY, "documents": []}, 422, "documents is empty"),
        ({"query": "  ", "documents": TEXTS}, 422, "query is empty"),
        ({"documents": TEXTS}, 422, "query: Field required"),
        ({"query": QUERY, "documents": [1, 2]}, 422, "documents.0"),
        ({"query": QUERY, "documents": TEXTS, "top_n": 0}, 422, "top_n"),
        ({"query": QUERY, "documents": ["x"] * 21}, 422, "limit is 20 per request"),
        ({"query": QUERY, "documents": ["y" * 501]}, 422, "documents[0] has 501 characters"),
        ({"query": QUERY, "documents": ["ok", "   "]}, 422, "empty text"),
        ({"query": QUERY, "documents": TEXTS, "top_n": True}, 422, "top_n: Value error, must be an integer, not true"),
        ({"query": "aspirin \ud800", "documents": TEXTS}, 422, "query holds a lone surrogate (U+D800"),
        ({"query": QUERY, "documents": ["ok", "a \udfff"]}, 422, "documents[1]: the text of passage '1' holds a lone"),
        ({"query": QUERY, "documents": [{"title": "t"}]}, 422, "documents[0] has no 'text'"),
        ({"query": QUERY, "documents": [{"title": "t"}], "rank_fields": ["title", "year"]}, 422,
         "documents[0] has no field 'year'"),
        ({"query": QUERY, "documents": TEXTS, "max_tokens_per_doc": 0}, 422, "max_tokens_per_doc"),
    ],
)
def test_bad_requests_get_a_4xx_json_message(server, body, status, words):
    assert words in _error(_post(server, "/v1/rerank", body), status)


def test_more_errors(server):
    dup = {"query": QUERY, "documents": [{"text": "a", "id": "x"}, {"text": "b", "id": "x"}]}
    assert "duplicate passage id 'x'" in _error(_post(server, "/v1/select", dup), 422)
    bad_json = httpx.post(server.url + "/v1/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in _error(bad_json, 422)
    assert "30000 bytes" not in _error(_post(server, "/v1/rerank", {"query": QUERY, "documents": ["z" * 400] * 60}), 413)

    def chunks():
        yield b'{"query": "q", "documents": ['
        for _ in range(60):
            yield b'"' + b"w" * 400 + b'",'
        yield b'"end"]}'

    streamed = httpx.post(server.url + "/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert "larger than the server's limit of 20000 bytes" in _error(streamed, 413)
    assert _error(httpx.get(server.url + "/v1/nothing"), 404)
    assert _error(httpx.get(server.url + "/v1/rerank"), 405)


def test_api_key():
    with BackgroundServer(create_app(keyword_reranker(), ServeSettings(api_key="s3cret"))) as srv:
        body = {"query": QUERY, "documents": TEXTS}
        assert "Bearer" in _error(_post(srv, "/v1/rerank", body), 401)
        assert _error(_post(srv, "/v1/rerank", body, headers={"Authorization": "Bearer wrong"}), 401)
        assert _error(httpx.get(srv.url + "/v1/models"), 401)
        assert httpx.get(srv.url + "/health").status_code == 200  # load balancers need no key
        ok = _post(srv, "/v1/rerank", body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"][0]["index"] == BEST
        # the API schema is behind the key too; the docs page is off unless asked for
        assert _error(httpx.get(srv.url + "/openapi.json"), 401)
        schema = httpx.get(srv.url + "/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()
        assert "/v1/rerank" in schema["paths"] and "/openapi.json" not in schema["paths"]
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert httpx.get(srv.url + path, headers={"Authorization": "Bearer s3cret"}).status_code == 404


def test_docs_page_only_when_asked_and_behind_the_key():
    with BackgroundServer(create_app(keyword_reranker(), ServeSettings(api_key="s3cret", docs=True))) as srv:
        assert _error(httpx.get(srv.url + "/docs"), 401)
        page = httpx.get(srv.url + "/docs", headers={"Authorization": "Bearer s3cret"})
        assert page.status_code == 200 and "swagger-ui" in page.text and "/openapi.json" in page.text
    with BackgroundServer(create_app(keyword_reranker())) as srv:  # no key: the schema is open, no docs page
        assert httpx.get(srv.url + "/openapi.json").status_code == 200
        assert httpx.get(srv.url + "/docs").status_code == 404


def test_access_log_flag():
    import logging

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    # listen on uvicorn.access itself: whether its records reach the root logger depends on
    # what earlier servers and CLI runs in this process set on the "uvicorn" loggers
    access = logging.getLogger("uvicorn.access")
    lines, level = Lines(), access.level
    access.addHandler(lines)
    try:
        with BackgroundServer(create_app(keyword_reranker()), access_log=True) as srv:
            httpx.get(srv.url + "/health")
        with BackgroundServer(create_app(keyword_reranker())) as quiet:
            httpx.get(quiet.url + "/v1/models")
    finally:
        access.removeHandler(lines)
        access.setLevel(level)
    assert any("/health" in line and "200" in line for line in lines.lines)
    assert not any("/v1/models" in line for line in lines.lines)


class _Picky(Reranker):
    """A real reranker that refuses queries naming 'poison', and crashes on 'crash'."""

    def rerank_batch(self, queries, candidate_lists, **kw):
        if any("crash" in q for q in queries):
            raise RuntimeError("internal detail that must not leak")
        if any("poison" in q for q in queries):
            raise InvalidInputError("this query is poisoned")
        return super().rerank_batch(queries, candidate_lists, **kw)


def test_concurrent_requests_are_batched_and_one_bad_request_fails_alone():
    from helpers_integrations import KeywordModel

    from meteora.embeddings.encoder import Encoder

    rr = _Picky(generator=None, scorer=None, encoder=Encoder(KeywordModel(), cache=None))
    settings = ServeSettings(max_batch_size=8, max_wait_ms=1000)
    queries = ["Does aspirin prevent stroke?", "insulin in dogs?", "fever in a child", "kidney disease in dogs",
               "poison aspirin", "glucose and insulin"]

    async def fire(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/rerank", json={"query": q, "documents": TEXTS}) for q in queries))

    with BackgroundServer(create_app(rr, settings)) as srv:
        responses = asyncio.run(fire(srv.url))
        stats = httpx.get(srv.url + "/health").json()["batching"]
        crash = _post(srv, "/v1/rerank", {"query": "crash now", "documents": TEXTS})
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 422, 200]
    assert "this query is poisoned" in responses[4].json()["error"]["message"]
    assert stats["requests"] == 6 and stats["largest_batch"] >= 3 and stats["batches"] < 6
    for q, r in zip(queries, responses, strict=True):
        if r.status_code == 200:  # batched answers are the answers of single calls
            alone = rr.rerank(q, TEXTS)
            assert [x["index"] for x in r.json()["results"]] == [int(h.id) for h in alone.ranked]
    assert "the server log has the details" in _error(crash, 500)
    assert "internal detail" not in crash.text


@pytest.mark.slow
def test_meteora_serve_command(tiny_st_dir):
    """The real command in a subprocess: query-only, no scorer, the tiny encoder (slow:
    a fresh interpreter imports torch and sentence-transformers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", METEORA_NUM_THREADS="1",
               METEORA_SERVER_API_KEY="k3y", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    cmd = [sys.executable, "-m", "meteora.cli", "serve", "--no-lm", "--scorer", "none", "--embedding-model",
           str(tiny_st_dir), "--port", str(port), "--model-name", "tiny", "--access-log"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "meteora serve did not start in 120 s"
            time.sleep(0.3)
        out = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": TEXTS, "top_n": 2},
                         headers={"Authorization": "Bearer k3y"}, timeout=60)
        assert out.status_code == 200, out.text
        assert out.json()["model"] == "tiny" and len(out.json()["results"]) == 2
        assert httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": TEXTS}).status_code == 401
        assert httpx.get(url + "/openapi.json").status_code == 401 and httpx.get(url + "/docs").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = proc.stdout.read()
    assert log.count(f"serving tiny on http://127.0.0.1:{port}") == 1 and "Uvicorn running" not in log  # one line
    assert re.search(r'INFO uvicorn.access: 127\.0\.0\.1:\d+ - "POST /v1/rerank HTTP/1.1" 200', log), log
    assert '"POST /v1/rerank HTTP/1.1" 401' in log


def test_bad_serve_flags_fail_before_loading_anything():
    proc = subprocess.run([sys.executable, "-m", "meteora.cli", "serve", "--max-documents", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "expected a positive integer" in proc.stderr


def test_micro_batcher_caps_batches_refuses_a_full_queue_and_checks_result_counts():
    from meteora.server.batching import MicroBatcher, QueueFullError

    sizes: list[int] = []

    def square(xs):
        sizes.append(len(xs))
        time.sleep(0.05)
        return [x * x for x in xs]

    async def main():
        b = MicroBatcher(square, max_batch_size=4, max_wait_s=0.2, max_queue=100)
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.aclose()
        full = MicroBatcher(square, max_batch_size=1, max_wait_s=0, max_queue=2)
        tasks = [asyncio.ensure_future(full.submit(i)) for i in range(6)]
        done = await asyncio.gather(*tasks, return_exceptions=True)
        await full.aclose()
        short = MicroBatcher(lambda xs: xs[:-1], max_batch_size=8, max_wait_s=0.05)
        with pytest.raises(RuntimeError, match="the batch function returned 0 results for 1 items"):
            await asyncio.gather(short.submit(1), short.submit(2))
        await short.aclose()
        return out, done

    out, done = asyncio.run(main())
    assert out == [i * i for i in range(10)]
    assert sizes[:3] == [4, 4, 2]
    assert any(isinstance(d, QueueFullError) for d in done) and 0 in done
    with pytest.raises(InvalidInputError, match="max_batch_size"):
        MicroBatcher(square, max_batch_size=0)
