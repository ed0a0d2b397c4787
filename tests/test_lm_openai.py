"""The OpenAI-compatible backend: a real llama.cpp server on 127.0.0.1 (integration) and a
stdlib stub server for every error path. Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from meteora.errors import MeteoraError  # noqa: E402
from meteora.lm.base import (  # noqa: E402
    LMServerError,  # noqa: E402
    SamplingParams,
    UnsupportedOperationError,
)
from meteora.lm.openai_compat import OpenAICompatLM, OpenAIServerError  # noqa: E402

CHAT = [{"role": "user", "content": "Name one symptom of influenza."}]


# ------------------------------------------------------------------ stub server
def _chat_body(text: str, logprobs: bool = False) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs:
        choice["logprobs"] = {
            "content": [
                {
                    "token": " yes",
                    "logprob": -0.1,
                    "bytes": None,
                    "top_logprobs": [
                        {"token": " yes", "logprob": -0.1, "bytes": None},
                        {"token": " no", "logprob": -2.5, "bytes": None},
                    ],
                }
            ]
        }
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "stub", "choices": [choice]}


class _Stub(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):  # noqa: N802 - http.server API
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with srv.lock:
            srv.calls += 1
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
            srv.auth.append(self.headers.get("Authorization"))
            srv.bodies.append(body)
            n = srv.calls
        try:
            mode = srv.mode
            if mode == "ok" or (mode == "flaky" and n > 2):
                time.sleep(srv.delay)
                if self.path.endswith("/chat/completions"):
                    self._send(200, json.dumps(_chat_body("hello", logprobs=srv.logprobs)).encode())
                else:
                    out = {"id": "c", "object": "text_completion", "created": 0, "model": "stub",
                           "choices": [{"index": 0, "text": " world", "finish_reason": "stop", "logprobs": None}]}
                    self._send(200, json.dumps(out).encode())
            elif mode in ("500", "flaky"):
                self._send(500, b'{"error": {"message": "boom", "type": "server_error"}}')
            elif mode in ("404", "401"):
                self._send(int(mode), b'{"error": {"message": "nope", "type": "invalid_request_error"}}')
            elif mode == "slow":
                time.sleep(1.5)
                self._send(200, json.dumps(_chat_body("late")).encode())
            elif mode == "drip":  # headers at once, then one byte every 0.2 s
                full = json.dumps(_chat_body("dripped")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(full)))
                self.end_headers()
                self.wfile.flush()
                try:
                    for i in range(len(full)):
                        if srv.stop.is_set():
                            break
                        self.wfile.write(full[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:  # the client hung up: what a bounded timeout does
                    srv.hung_up += 1
            elif mode == "garbage":
                self._send(200, b"<html>this is not JSON</html>")
            elif mode == "nochoices":
                self._send(200, b'{"id": "x", "object": "chat.completion", "model": "stub"}')
            elif mode == "truncated":
                full = json.dumps(_chat_body("cut short")).encode()
                self._send(200, full[:25], length=len(full))
                self.close_connection = True
        finally:
            with srv.lock:
                srv.inflight -= 1


@pytest.fixture()
def stub():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    srv.daemon_threads = True
    srv.mode, srv.delay, srv.logprobs = "ok", 0.0, False
    srv.calls = srv.inflight = srv.max_inflight = 0
    srv.auth, srv.bodies, srv.lock = [], [], threading.Lock()
    srv.stop, srv.hung_up = threading.Event(), 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def _lm(stub, **kw) -> OpenAICompatLM:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("max_retries", 0)
    kw.setdefault("backoff", 0.01)
    return OpenAICompatLM(stub.url, "stub-model", **kw)


# ------------------------------------------------------------------ stub: happy paths
def test_chat_raw_and_complete(stub):
    lm = _lm(stub)
    assert lm.generate([CHAT, "Hello"]) == ["hello", " world"]
    assert lm.complete(["Hi"], max_new_tokens=3) == ["hello"]
    chat_body = next(b for b in stub.bodies if "messages" in b)
    assert chat_body["model"] == "stub-model" and chat_body["temperature"] == 0.0
    assert lm.identity() == {"backend": "openai", "model": "stub-model", "url": stub.url, "adapter": None}


def test_no_api_key_needed_and_a_given_key_is_sent(stub):
    _lm(stub).complete(["Hi"])
    _lm(stub, api_key="s3cret").complete(["Hi"])
    assert stub.auth[-1] == "Bearer s3cret"
    assert stub.auth[0] and "s3cret" not in stub.auth[0]  # a placeholder, never a real key


def test_sampling_fields_and_stop(stub):
    lm = _lm(stub)
    lm.generate([CHAT], SamplingParams(max_new_tokens=5, do_sample=True, temperature=0.5, seed=3, stop=("\n",)))
    body = stub.bodies[-1]
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stop"]) == (5, 0.5, 3, ["\n"])


def test_logprobs_when_the_server_gives_them(stub):
    stub.logprobs = True
    rows = _lm(stub).next_token_logprobs([CHAT], top_k=2)
    assert rows == [{" yes": -0.1, " no": -2.5}]
    assert stub.bodies[-1]["logprobs"] is True and stub.bodies[-1]["top_logprobs"] == 2
    stub.logprobs = False
    with pytest.raises(LMServerError, match="no logprobs"):
        _lm(stub).next_token_logprobs([CHAT])
    with pytest.raises(UnsupportedOperationError, match='backend="transformers"'):
        _lm(stub).score(["p"], ["c"])


def test_concurrency_is_bounded(stub):
    stub.delay = 0.15
    lm = _lm(stub, concurrency=2)
    out = lm.generate([CHAT] * 6)
    assert out == ["hello"] * 6 and stub.max_inflight <= 2


def test_async_generate(stub):
    stub.delay = 0.05
    lm = _lm(stub, concurrency=3)
    out = asyncio.run(lm.agenerate([CHAT] * 5))
    assert out == ["hello"] * 5 and stub.max_inflight <= 3
    assert asyncio.run(lm.acomplete(["Hi"], chat=False)) == ["world"]


def test_retries_with_backoff_then_success(stub):
    stub.mode = "flaky"  # two 500s, then an answer
    assert _lm(stub, max_retries=2).complete(["Hi"]) == ["hello"]
    assert stub.calls == 3


# ------------------------------------------------------------------ stub: every failure
@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("500", r"HTTP 500.*check its log"),
        ("404", r"HTTP 404.*base_url"),
        ("401", r"HTTP 401.*api_key"),
        ("garbage", r"(unreadable|not an OpenAI-shaped|without choices)"),
        ("nochoices", r"without choices"),
        ("truncated", r"(could not connect|unreadable|failed)"),
    ],
)
def test_server_failures_are_clear_errors(stub, mode, match):
    stub.mode = mode
    with pytest.raises(OpenAIServerError, match=match) as info:
        _lm(stub).complete(["Hi"])
    assert stub.url in str(info.value) and isinstance(info.value, MeteoraError)


def test_500_is_retried_a_bounded_number_of_times(stub):
    stub.mode = "500"
    with pytest.raises(OpenAIServerError, match="HTTP 500") as info:
        _lm(stub, max_retries=2).complete(["Hi"])
    assert stub.calls == 3 and info.value.status == 500


def test_timeout(stub):
    stub.mode = "slow"
    t0 = time.perf_counter()
    with pytest.raises(OpenAIServerError, match=r"did not answer within 0.3 s"):
        _lm(stub, timeout=0.3).complete(["Hi"])
    assert time.perf_counter() - t0 < 1.4


@pytest.mark.parametrize("way", ["sync", "async"])
def test_timeout_bounds_a_server_that_drips_its_answer(stub, way):
    # headers, then a byte every 0.2 s: each read is quick, the answer never ends in time
    stub.mode = "drip"
    lm = _lm(stub, timeout=1.0, max_retries=1, backoff=0.01)
    t0 = time.perf_counter()
    with pytest.raises(OpenAIServerError, match=r"did not answer within 1 s"):
        if way == "sync":
            lm.complete(["Hi"])
        else:
            asyncio.run(lm.acomplete(["Hi"]))
    elapsed = time.perf_counter() - t0
    assert stub.calls == 2  # the timed-out attempt was retried once
    assert elapsed < 2 * 1.0 + 1.5, elapsed  # two bounded attempts, not the ~50 s the drip lasts


def test_sync_calls_work_inside_a_running_event_loop(stub):
    async def inside():
        return _lm(stub).complete(["Hi"])

    assert asyncio.run(inside()) == ["hello"]


def test_refused_connection():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lm = OpenAICompatLM(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(OpenAIServerError, match=rf"could not connect to the LM server at http://127.0.0.1:{port}/v1"):
        lm.complete(["Hi"])


def test_bad_arguments():
    from meteora.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="base_url"):
        OpenAICompatLM("127.0.0.1:8000", "m")
    with pytest.raises(InvalidInputError, match="concurrency"):
        OpenAICompatLM("http://127.0.0.1:1/v1", "m", concurrency=0)


# ------------------------------------------------------------------ a real server (llama.cpp)
@pytest.fixture(scope="module")
def real_server():
    pytest.importorskip("xllamacpp")
    from meteora.lm.llamacpp import LlamaCppLM
    from meteora.models import default_gguf_path

    gguf = default_gguf_path()
    if gguf is None:
        pytest.skip("the packaged SmolLM2 GGUF is not installed (run `meteora models pull`)")
    server = LlamaCppLM(gguf, n_threads=1, n_ctx=2048, listen=True)
    assert server.url and server.url.startswith("http://127.0.0.1:")
    yield server


@pytest.mark.integration
def test_real_server_chat_raw_logprobs_async(real_server):
    lm = OpenAICompatLM(real_server.url + "/v1", "smollm2", timeout=120, concurrency=2)
    chat, raw = lm.generate([CHAT, "The capital of France is"], SamplingParams(max_new_tokens=8))
    assert isinstance(chat, str) and chat.strip() and isinstance(raw, str)
    assert lm.generate([CHAT], SamplingParams(max_new_tokens=8)) == [chat]  # greedy is repeatable
    cont = lm.generate([[*CHAT, {"role": "assistant", "content": "1."}]], SamplingParams(max_new_tokens=6))[0]
    assert not cont.startswith("1."), "the continued prefix is not repeated"
    rows = lm.next_token_logprobs([CHAT, "The capital of France is"], top_k=3)
    assert all(1 <= len(r) <= 3 and all(v <= 0 for v in r.values()) for r in rows)
    assert asyncio.run(lm.agenerate([CHAT], SamplingParams(max_new_tokens=8))) == [chat]


@pytest.mark.integration
def test_real_server_runs_the_generator_and_the_verifier(real_server, tmp_path):
    from meteora.rationales.generator import RationaleGenerator
    from meteora.types import to_passages
    from meteora.verifier import Verifier

    gen = RationaleGenerator.from_pretrained(
        "smollm2", backend="openai", base_url=real_server.url + "/v1", cache=tmp_path / "r.sqlite",
        lm_options={"timeout": 120},
    )
    assert gen.backend == "openai" and gen.template.name == "chat" and gen.model is None
    rs = gen.generate("Does aspirin reduce the risk of stroke?", n=3, max_new_tokens=48)
    assert rs.rationales and all(r.strip() for r in rs.rationales)
    assert gen.cache_key_fields(3)["backend"]["url"] == real_server.url + "/v1"
    res = Verifier(gen.lm, summarize=False, max_new_tokens=48).verify(
        "Does aspirin reduce the risk of stroke?", to_passages(["Aspirin lowered stroke risk in a trial."])
    )
    assert list(res.verdicts) == ["0"]
