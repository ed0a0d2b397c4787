"""Load test of ``meteora serve`` on loopback: N concurrent clients, a fixed number of
requests, latency percentiles, throughput and errors (which must be 0).

Run from the repository root (the project installed in ``.venv`` with the ``serve``
extra, the offline models pulled)::

    METEORA_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/serve_load.py   # the committed numbers
    nice -n 10 .venv/bin/python benchmarks/serve_load.py --clients 2 --requests 2   # smoke run

What it does:

1. builds the requests (not timed): the first ``clients × requests`` PubMedQA *test*
   questions, each with its BM25 top-``--candidates`` chunks of the 3,358 PubMedQA
   context chunks as documents (``{"text", "doc_id", "position"}`` objects, so the
   evidence scorer reads the chunks that share an abstract, as in the bench);
2. starts the real command, ``meteora serve`` (by default ``--no-lm``: query-only, the
   README's recommendation with the offline 135M LM; ``--full`` serves the default
   rationale LM too), in a subprocess on a free port of 127.0.0.1 — it only ever
   listens on and is called on loopback;
3. sends one untimed warm-up request, then ``--clients`` concurrent clients (asyncio +
   httpx), each sending its ``--requests`` requests one after the other to
   ``POST /v1/rerank`` (Cohere shape, ``top_n`` 5), each a different question;
4. stops by itself: after the last response, or after ``--max-seconds`` (the remaining
   requests count as errors), then terminates the server.

The JSON (``benchmarks/results/serve_load.json``, written atomically) holds the command,
the server's command, the configuration, package versions, the machine's CPU count and
load average (the machine is shared: other processes may use the CPU), latency (p50, p95,
mean, max, in seconds), throughput (requests per second of wall time), the error count,
HTTP status counts, and the server's micro-batching counters from ``GET /health``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from meteora.bench.report import (
    command_line,
    environment_versions,
    load_average,
    write_results_json,
)

DEFAULT_OUTPUT = Path("benchmarks") / "results" / "serve_load.json"
PACKAGES = ("meteora-rerank", "torch", "sentence-transformers", "fastapi", "uvicorn", "httpx", "xllamacpp")
HOST = "127.0.0.1"  # loopback only, on purpose: no option changes it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=6, help="requests per client (default 6)")
    p.add_argument("--candidates", type=int, default=20, help="documents per request: BM25 top-k (default 20)")
    p.add_argument("--top-n", type=int, default=5, help="top_n of each request (default 5)")
    p.add_argument("--full", action="store_true", help="serve the default rationale LM too (default: --no-lm)")
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads (default 2)")
    p.add_argument("--max-batch-size", type=int, default=8, help="the server's micro-batch size (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="the server's batching wait (default 10 ms)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long (default 900 s)")
    p.add_argument("--data", default=None, help="PubMedQA folder (default: $METEORA_DATA_DIR/pubmedqa)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    for name in ("clients", "requests", "candidates", "top_n", "threads", "max_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args





def latency_stats(values: list[float]) -> dict[str, float]:
    """p50, p95, mean, min and max of ``values`` (seconds).

    Example:
        >>> latency_stats([1.0, 2.0, 3.0, 4.0])["p50"]
        2.5
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "mean": round(float(a.mean()), 4),
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
    }


def build_requests(args: argparse.Namespace, n: int) -> list[dict[str, Any]]:
    """The first ``n`` PubMedQA test questions with their BM25 top-k chunks."""
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.retrievers.bm25 import BM25Retriever

    bench = build_pubmedqa_benchmark(args.data)
    qids = list(bench.splits["test"])[:n]
    if len(qids) < n:
        raise SystemExit(f"the test split has only {len(qids)} questions; lower --clients or --requests")
    questions = [bench.queries[q] for q in qids]
    rankings = BM25Retriever().index(bench.corpus).search(questions, k=args.candidates)
    return [
        {"query": q, "top_n": args.top_n,
         "documents": [{"text": p.text, "doc_id": p.doc_id, "position": p.position} for p in r.passages]}
        for q, r in zip(questions, rankings, strict=True)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    cmd = ["-m", "meteora.cli", "-q", "serve", "--host", HOST, "--port", str(port), "--threads", str(args.threads),
           "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", f"{args.max_wait_ms:g}",
           "--max-documents", str(max(1000, args.candidates))]
    if not args.full:
        cmd.insert(4, "--no-lm")
    return cmd


def wait_ready(httpx: Any, url: str, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not become ready in time")
        time.sleep(0.5)


async def run_clients(httpx: Any, url: str, requests: list[dict[str, Any]], clients: int, budget_s: float):
    """``clients`` workers, each sending its share of ``requests`` one after the other."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    shares = [requests[i::clients] for i in range(clients)]
    deadline = time.monotonic() + budget_s

    async def worker(share: list[dict[str, Any]], client: Any) -> None:
        for body in share:
            if time.monotonic() > deadline:
                statuses["not_sent"] = statuses.get("not_sent", 0) + 1
                errors.append("not sent: --max-seconds reached")
                continue
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/rerank", json=body)
            except httpx.HTTPError as exc:
                statuses["transport_error"] = statuses.get("transport_error", 0) + 1
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
            if resp.status_code != 200 or len(resp.json().get("results", [])) != min(body["top_n"], len(body["documents"])):
                errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=max(60.0, budget_s)) as client:
        await asyncio.gather(*(worker(share, client) for share in shares))
    return latencies, statuses, errors, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import httpx

    args = parse_args(argv)
    n = args.clients * args.requests
    started = time.monotonic()
    load_start = load_average()
    print(f"building {n + 1} requests (PubMedQA test questions, BM25 top-{args.candidates})...", flush=True)
    reqs = build_requests(args, n + 1)
    warmup, reqs = reqs[0], reqs[1:]
    port = free_port()
    cmd = server_command(args, port)
    env = dict(os.environ, NO_PROXY=HOST, no_proxy=HOST, TOKENIZERS_PARALLELISM="false")
    env.pop("METEORA_SERVER_API_KEY", None)  # the load test runs without a key
    proc = subprocess.Popen([sys.executable, *cmd], env=env)
    url = f"http://{HOST}:{port}"
    try:
        wait_ready(httpx, url, proc, started + args.max_seconds)
        t0 = time.perf_counter()
        first = httpx.post(url + "/v1/rerank", json=warmup, timeout=max(60.0, args.max_seconds))
        warmup_s = time.perf_counter() - t0
        if first.status_code != 200:
            raise SystemExit(f"the warm-up request failed: HTTP {first.status_code} {first.text[:300]}")
        before = httpx.get(url + "/health").json()["batching"]
        print(f"server ready; {args.clients} clients x {args.requests} requests...", flush=True)
        budget = max(1.0, args.max_seconds - (time.monotonic() - started))
        latencies, statuses, errors, wall = asyncio.run(run_clients(httpx, url, reqs, args.clients, budget))
        after = httpx.get(url + "/health").json()["batching"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    batching = {k: after[k] - before.get(k, 0) for k in ("requests", "batches", "failed_batches")}
    batching["largest_batch"] = after["largest_batch"]
    batching["mean_batch"] = round(batching["requests"] / batching["batches"], 2) if batching["batches"] else None
    report = {
        "benchmark": "serve_load",
        "command": command_line(),
        "server_command": shlex.join(["meteora", *cmd[2:]]).replace(f"--port {port}", "--port PORT"),
        "config": {
            "clients": args.clients, "requests_per_client": args.requests, "requests": n,
            "endpoint": "POST /v1/rerank", "candidates_per_request": args.candidates, "top_n": args.top_n,
            "candidates": f"BM25 top-{args.candidates} of the 3,358 PubMedQA context chunks, one PubMedQA test question per request",
            "reranker": "default Reranker() (SmolLM2 rationales + MiniLM + evidence scorer)" if args.full
            else "Reranker(generator=None): query-only, MiniLM + evidence scorer",
            "server_threads": args.threads, "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms,
            "data": args.data or "$METEORA_DATA_DIR/pubmedqa",
        },
        "machine": {"cpus": os.cpu_count(), "load_average_start": load_start, "load_average_end": load_average()},
        "versions": environment_versions(PACKAGES),
        "warmup_request_s": round(warmup_s, 3),
        "latency_s": latency_stats(latencies),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 3) if wall > 0 else None,
        "errors": len(errors),
        "error_examples": errors[:5],
        "status_counts": statuses,
        "batching": batching,
    }
    lat = report["latency_s"]
    print(f"{n} requests in {wall:.1f} s: {report['throughput_rps']} req/s, p50 {lat.get('p50')} s, "
          f"p95 {lat.get('p95')} s, errors {len(errors)}, mean batch {batching['mean_batch']}")
    if not args.no_write:
        write_results_json(args.output, report)
        print(f"wrote {args.output}")
    if errors:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
