"""Every script in examples/ runs (subprocess, smoke arguments, offline, with timeouts)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("METEORA_NUM_THREADS", "1")
    return env


def run_example(name: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with this interpreter from the repository root."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{name} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def _needs_encoder() -> None:
    from meteora.models import default_embedding_path

    if default_embedding_path() is None:
        pytest.skip("the packaged MiniLM is not installed; run `meteora models pull`")


def _needs_data(sub: str) -> None:
    from meteora.errors import DataNotFoundError
    from meteora.settings import data_dir

    try:
        data_dir(sub)
    except DataNotFoundError as exc:
        pytest.skip(f"no {sub} data: {exc}")


def test_every_example_is_tested():
    tested = {"quickstart.py", "index_and_search.py", "openai_server.py", "train_tiny_adapter.py", "evaluate_pubmedqa.py",
              "langchain_compressor.py", "llamaindex_postprocessor.py", "serve_client.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_quickstart():
    _needs_encoder()
    out = run_example("quickstart.py", timeout=300).stdout
    assert "rationale 0: Does aspirin prevent stroke?" in out
    assert "selected a2:" in out  # the stroke result is picked


def test_index_and_search():
    _needs_encoder()
    pytest.importorskip("bm25s")
    out = run_example("index_and_search.py", timeout=400).stdout
    assert "read 20 passages" in out and "hybrid top 5:" in out
    selected = out.split("selected ", 1)[1]
    assert "aspirin-2" in selected


def test_openai_server_without_url_says_how_to_start_one():
    proc = run_example("openai_server.py", timeout=120, check=False)
    assert proc.returncode == 2
    assert "no --base-url given" in proc.stderr and "vllm serve" in proc.stderr


# --------------------------------------------------------------------------- a stub server
CONTENT = (
    "1. Look for randomized trials reporting stroke incidence with aspirin versus placebo.\n"
    "2. Check the rates of major bleeding and other adverse events with aspirin.\n"
    "3. Prefer results that give relative risks with confidence intervals."
)


class _Stub(BaseHTTPRequestHandler):
    """Just enough of the OpenAI API: models, chat completions, completions."""

    requests: list[dict] = []

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._send({"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "test"}]})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        type(self).requests.append({"path": self.path, "body": body})
        usage = {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40}
        if self.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": CONTENT}, "finish_reason": "stop"}
            self._send({"id": "c", "object": "chat.completion", "created": 0, "model": "stub", "choices": [choice], "usage": usage})
        else:
            choice = {"index": 0, "text": CONTENT, "finish_reason": "stop", "logprobs": None}
            self._send({"id": "c", "object": "text_completion", "created": 0, "model": "stub", "choices": [choice], "usage": usage})

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def stub_server() -> Iterator[str]:
    _Stub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_server_against_a_local_stub(stub_server):
    if importlib.util.find_spec("meteora.lm") is None:
        pytest.skip("meteora.lm (generation backends, RationaleGenerator.from_pretrained(backend='openai')) is not there yet")
    pytest.importorskip("openai")
    _needs_encoder()
    out = run_example("openai_server.py", "--base-url", stub_server, "--model", "stub", timeout=300).stdout
    assert _Stub.requests, "the example never called the server"
    assert "query: Does aspirin prevent stroke?" in out
    assert "bleeding" in out  # a rationale from the server's answer


def test_train_tiny_adapter():
    for module in ("peft", "trl"):
        pytest.importorskip(module)
    _needs_data("med-rationales")
    from meteora.models import default_generator_path

    if default_generator_path() is None:
        pytest.skip("the packaged SmolLM2 (its tokenizer) is not installed; run `meteora models pull`")
    out = run_example("train_tiny_adapter.py", "--rows", "4", "--steps", "1", timeout=600).stdout
    assert "trained 1 steps" in out
    assert "adapter_model.safetensors" in out


def test_evaluate_pubmedqa_smoke():
    # bm25 only: the dense methods encode the whole corpus on a first run (minutes)
    _needs_data("pubmedqa")
    pytest.importorskip("bm25s")
    out = run_example("evaluate_pubmedqa.py", "--limit", "3", "--methods", "bm25", timeout=400).stdout
    assert "bm25" in out and "3 questions" in out


# --------------------------------------------------------------------------- integrations and the service
# (the README's LangChain, LlamaIndex and service snippets are these examples)
ANSWER = "low-dose aspirin reduced ischaemic stroke"


def test_langchain_compressor():
    _needs_encoder()
    pytest.importorskip("langchain_core")
    pytest.importorskip("langchain_classic")
    out = run_example("langchain_compressor.py", timeout=300).stdout
    assert ANSWER in out and "Dogs" not in out and "Statins" not in out
    assert "selected: a rationale chose it (pairing)" in out


def test_llamaindex_postprocessor():
    _needs_encoder()
    pytest.importorskip("llama_index.core")
    out = run_example("llamaindex_postprocessor.py", timeout=300).stdout
    assert ANSWER in out and "Dogs" not in out and "Statins" not in out
    assert "selected: a rationale chose it (pairing)" in out


def test_serve_client_against_its_own_server():
    _needs_encoder()
    for module in ("fastapi", "uvicorn", "httpx"):
        pytest.importorskip(module)
    out = run_example("serve_client.py", timeout=300).stdout
    lines = out.splitlines()
    assert lines[0].startswith("* [0]") and ANSWER in lines[0]
    assert "rationales: ['Does aspirin prevent stroke?']" in out and "[0] selected: a rationale chose it" in out
