"""Latency of ``Reranker.rerank`` on 50 PubMedQA candidates: cold vs warm rationale cache.

Run from the repository root::

    .venv/bin/python benchmarks/rerank_latency.py              # 20 questions, ~3-6 minutes
    .venv/bin/python benchmarks/rerank_latency.py --n 8        # quick check

Setup (not timed per query): the PubMedQA corpus (3,358 chunks), BM25 + dense (packaged
MiniLM) + RRF hybrid, and each question's hybrid top-50 candidates, built exactly as
``meteora bench pubmedqa`` builds them (the corpus embeddings come from its on-disk
cache under ``$METEORA_HOME/embeddings``). The first ``N`` questions of the test split
are measured; one more question is used to warm up (model loading, lazy imports, the
template's prefix key/value cache) and is not measured.

Each measured call is one ``rerank(question, candidates)`` — one query at a time, the
latency a user sees — timed with ``time.perf_counter``:

* ``query_only``: ``Reranker(generator=None)``: no LM, the query is the only rationale;
  the 50 candidates are encoded by the reranker.
* ``full_cold``: the full pipeline with the offline default generator (SmolLM2-135M
  through its chat template) and a fresh, empty rationale cache in a temporary folder:
  every question is generated.
* ``full_warm``: the same reranker and the same questions again: every rationale set
  is read from the cache.
* ``*_stored_embeddings``: the same, but the candidates' embeddings are taken from the
  dense index (``DenseRetriever.embeddings_for``, the path ``Reranker.search`` uses)
  instead of being re-encoded; the lookup is inside the timed region.

Per mode: mean / median / p90 / min / max seconds per query, and where the time went
(``generation`` — LM or cache lookup, ``encode_passages``, ``encode_rationales``,
``selection``, ``other``), measured by wrapping those calls. The run also checks that
the warm results equal the cold ones and that every warm call was a cache hit.

The JSON result (``benchmarks/results/rerank_latency.json``) holds the exact command,
configuration, package versions, machine facts (CPU count, threads, load average at
start and end: other processes may share the CPU) and the results. It is written
atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

from meteora._io import atomic_write_json  # noqa: E402
from meteora.bench.report import command_line, environment_versions, load_average  # noqa: E402

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "rerank_latency.json"
PARTS = ("generation", "encode_passages", "encode_rationales", "selection")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="questions measured (default 20)")
    p.add_argument("--candidates", type=int, default=50, help="hybrid candidates per question (default 50)")
    p.add_argument("--split", choices=["test", "train", "all"], default="test", help="question split (default test)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up questions (default 1)")
    p.add_argument("--generator", default=None, help="rationale LM (default: the offline SmolLM2)")
    p.add_argument("--template", default=None, help="prompt template (default: the model's)")
    p.add_argument("--n-rationales", type=int, default=None, help="rationales per query (default: template's)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation cap (default: template's)")
    p.add_argument("--window", type=int, default=1, help="expansion window (default 1)")
    p.add_argument("--embedding-model", default=None, help="encoder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--data", default=None, help="PubMedQA folder (default: $METEORA_DATA_DIR or ../shared/data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: $METEORA_NUM_THREADS or torch's)")
    p.add_argument("--online", action="store_true", help="allow model hub access (default: HF_HUB_OFFLINE=1)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result path")
    args = p.parse_args(argv)
    for name in ("n", "candidates"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("warmup", "window"):
        if getattr(args, name) < 0:
            p.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ("n_rationales", "max_new_tokens", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def _cpus_usable() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None


def stats(values: list[float]) -> dict[str, float]:
    """mean, median, p90 (linear interpolation), min, max and total of ``values``.

    Example:
        >>> stats([1.0, 2.0, 3.0])["median"]
        2.0
    """
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 4),
        "median": round(float(np.median(a)), 4),
        "p90": round(float(np.percentile(a, 90)), 4),
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
        "total": round(float(a.sum()), 3),
    }


class Stopwatch:
    """Accumulates time spent inside wrapped calls, per label, for the current query."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.depth = 0

    def reset(self) -> None:
        self.current = {}

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        """Replace ``obj.attr`` (a bound method) with a timed version on that instance."""
        inner: Callable[..., Any] = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.current[label] = self.current.get(label, 0.0) + time.perf_counter() - t0

        setattr(obj, attr, timed)


def build_candidates(args: argparse.Namespace, n_questions: int):
    """The benchmark context, question ids, questions and their hybrid top-k rankings."""
    from meteora.bench.pubmedqa import BenchmarkConfig, BenchmarkContext

    config = BenchmarkConfig(
        methods=["hybrid"],
        split=args.split,
        limit=n_questions,
        candidates=args.candidates,
        embedding_model=args.embedding_model,
        data_path=args.data,
        num_threads=args.threads,
    )
    config.validate()
    ctx = BenchmarkContext(config)
    if len(ctx.qids) < n_questions:
        raise SystemExit(f"the {args.split} split has only {len(ctx.qids)} questions; lower --n/--warmup")
    rankings = ctx.rankings("hybrid", args.candidates)
    return ctx, rankings


def run_mode(
    name: str,
    reranker: Any,
    questions: list[tuple[str, str, list[Any]]],
    watch: Stopwatch,
    *,
    dense: Any = None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Time ``reranker.rerank`` on each question; return per-query rows and a summary."""
    rows = []
    for qid, question, passages in questions:
        watch.reset()
        t0 = time.perf_counter()
        if dense is not None:
            emb = dense.embeddings_for([p.id for p in passages])
            res = reranker.rerank(question, passages, passage_embeddings=emb)
        else:
            res = reranker.rerank(question, passages)
        seconds = time.perf_counter() - t0
        parts = dict(watch.current)
        encode_total = parts.pop("encode_total", 0.0)
        parts["encode_rationales"] = max(0.0, encode_total - parts.get("encode_passages", 0.0))
        rset = res.rationale_set
        row = {
            "qid": qid,
            "seconds": round(seconds, 4),
            **{p: round(parts.get(p, 0.0), 4) for p in PARTS},
            "other": round(max(0.0, seconds - sum(parts.get(p, 0.0) for p in PARTS)), 4),
            "candidates": len(passages),
            "rationales": len(res.rationales),
            "fallback": res.fallback,
            "from_cache": bool(getattr(rset, "from_cache", False)),
            "selected": res.selected_ids,
        }
        rows.append(row)
    summary: dict[str, Any] = {"seconds_per_query": stats([r["seconds"] for r in rows])}
    summary["breakdown_mean_seconds"] = {
        p: round(float(np.mean([r[p] for r in rows])), 4) for p in (*PARTS, "other")
    }
    summary["mean_selected"] = round(float(np.mean([len(r["selected"]) for r in rows])), 2)
    summary["mean_rationales"] = round(float(np.mean([r["rationales"] for r in rows])), 2)
    summary["fallback_rate"] = round(float(np.mean([r["fallback"] for r in rows])), 3)
    summary["cache_hit_rate"] = round(float(np.mean([r["from_cache"] for r in rows])), 3)
    s = summary["seconds_per_query"]
    log(f"  {name:<34} mean {s['mean']:.3f} s  median {s['median']:.3f} s  p90 {s['p90']:.3f} s")
    return {"summary": summary, "per_query": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not args.online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    load_before = load_average()
    import torch

    from meteora.reranker import Reranker
    from meteora.settings import apply_thread_setting

    apply_thread_setting(args.threads)
    report: dict[str, Any] = {
        "command": command_line(),
        "config": {
            "n_questions": args.n,
            "warmup_questions": args.warmup,
            "split": args.split,
            "candidates": args.candidates,
            "candidate_source": "hybrid (BM25 + dense, RRF k=60) top-k over the 3,358 PubMedQA chunks",
            "window": args.window,
            "generator": args.generator or "default (SmolLM2-135M-Instruct, offline)",
            "template": args.template,
            "n_rationales": args.n_rationales,
            "max_new_tokens": args.max_new_tokens,
            "embedding_model": args.embedding_model or "default (all-MiniLM-L6-v2, packaged)",
            "one_query_per_call": True,
        },
        "versions": environment_versions(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": _cpus_usable(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "meteora_num_threads": os.environ.get("METEORA_NUM_THREADS"),
            "loadavg_start": load_before,
        },
        "setup_seconds": {},
        "results": {},
    }

    log(f"building PubMedQA hybrid top-{args.candidates} candidates for {args.n} + {args.warmup} questions ...")
    t0 = time.perf_counter()
    ctx, rankings = build_candidates(args, args.n + args.warmup)
    dense = ctx.retriever("dense")
    encoder = ctx.encoder()
    report["setup_seconds"]["candidates"] = round(time.perf_counter() - t0, 2)
    report["setup_seconds"]["corpus_embeddings_cached"] = ctx.embeddings_cached
    items = [(qid, q, list(r.passages)) for qid, q, r in zip(ctx.qids, ctx.queries, rankings, strict=True)]
    warm_items, measured = items[: args.warmup], items[args.warmup :]
    report["config"]["question_ids"] = [qid for qid, _, _ in measured]

    watch = Stopwatch()
    watch.wrap(encoder, "encode", "encode_total")

    with tempfile.TemporaryDirectory(prefix="meteora-latency-") as tmp:
        t0 = time.perf_counter()
        generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
        full = Reranker(
            generator=args.generator or "default",
            encoder=encoder,
            template=args.template,
            n_rationales=args.n_rationales,
            window=args.window,
            generation=generation,
            num_threads=args.threads,
            cache=Path(tmp) / "rationales.sqlite",  # a fresh, empty cache: cold
        )
        report["setup_seconds"]["load_generator"] = round(time.perf_counter() - t0, 2)
        gen = full.generator
        report["config"]["generator_model_id"] = getattr(gen, "model_id", None)
        report["config"]["template_used"] = getattr(getattr(gen, "template", None), "name", None)
        query_only = Reranker(generator=None, encoder=encoder, window=args.window, num_threads=args.threads)
        for rr in (full, query_only):
            watch.wrap(rr, "_embed_passages", "encode_passages")
            watch.wrap(rr.selector, "select", "selection")
        watch.wrap(gen, "generate", "generation")

        t0 = time.perf_counter()
        for _, q, ps in warm_items:  # lazy initialisation, prefix KV cache; not measured
            query_only.rerank(q, ps)
            full.rerank(q, ps)
        report["setup_seconds"]["warmup"] = round(time.perf_counter() - t0, 2)

        log(f"timing rerank() on {len(measured)} questions, {args.candidates} candidates each:")
        results = report["results"]
        results["query_only"] = run_mode("query_only", query_only, measured, watch, log=log)
        results["query_only_stored_embeddings"] = run_mode(
            "query_only_stored_embeddings", query_only, measured, watch, dense=dense, log=log
        )
        results["full_cold"] = run_mode("full_cold (empty cache)", full, measured, watch, log=log)
        results["full_warm"] = run_mode("full_warm (cached rationales)", full, measured, watch, log=log)
        results["full_warm_stored_embeddings"] = run_mode(
            "full_warm_stored_embeddings", full, measured, watch, dense=dense, log=log
        )

    cold, warm = results["full_cold"]["per_query"], results["full_warm"]["per_query"]
    stored = results["full_warm_stored_embeddings"]["per_query"]
    report["checks"] = {
        "cold_cache_misses": sum(not r["from_cache"] for r in cold),
        "warm_cache_hits": sum(r["from_cache"] for r in warm),
        "warm_selection_equals_cold": all(a["selected"] == b["selected"] for a, b in zip(cold, warm, strict=True)),
        "stored_embedding_selection_equals_encoded": all(
            a["selected"] == b["selected"] for a, b in zip(warm, stored, strict=True)
        ),
    }
    c, w = results["full_cold"]["summary"]["seconds_per_query"], results["full_warm"]["summary"]["seconds_per_query"]
    report["summary"] = {
        "query_only_mean_s": results["query_only"]["summary"]["seconds_per_query"]["mean"],
        "full_cold_mean_s": c["mean"],
        "full_warm_mean_s": w["mean"],
        "cold_over_warm_mean": round(c["mean"] / max(w["mean"], 1e-9), 1),
    }
    report["machine"]["loadavg_end"] = load_average()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(args.output, report)
    log(f"checks: {report['checks']}")
    log(f"wrote {args.output} ({report['total_seconds']} s)")
    return report


if __name__ == "__main__":
    main()
