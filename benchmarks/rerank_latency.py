"""Latency of ``Reranker.rerank`` on 50 PubMedQA candidates, per stage, cold to fully warm.

Run from the repository root (the project installed in ``.venv``)::

    .venv/bin/python benchmarks/rerank_latency.py                       # the committed numbers
    .venv/bin/python benchmarks/rerank_latency.py --limit 2 --threads 1 # smoke run, ~2 minutes
    .venv/bin/python benchmarks/rerank_latency.py --sections startup,agreement  # start-up only

``--sections`` picks the parts: ``per_query`` (this module), ``startup`` and ``agreement``
(the start-up cost in fresh processes and the ONNX/torch runtime agreement:
``benchmarks/startup_latency.py``); the sections of the results file that are not run
are kept as they were, each with its own ``command``.

Setup (not timed): the PubMedQA corpus (3,358 chunks), BM25 + dense (packaged MiniLM) +
RRF hybrid (k=60, 100 fused candidates), and each question's hybrid top-50 candidates,
built with the public API (``meteora.datasets``, ``meteora.retrievers``). The corpus is
embedded by an :class:`~meteora.embeddings.Encoder` with an on-disk
:class:`~meteora.embeddings.PassageEmbeddingCache` (default
``$METEORA_HOME/passage-embeddings``): the first run encodes the corpus once (several
minutes on a CPU), later runs read it back. The first ``--limit`` questions of the split
are measured; ``--warmup`` more are run first, unmeasured, per thread setting.

Each measured call is one ``rerank(question, candidates)`` — one query at a time, the
latency a user sees — timed with ``time.perf_counter``, for each thread count in
``--threads`` and each mode in ``--modes``:

* modes: ``query_only`` (``Reranker(generator=None)``: the query is the only rationale)
  and ``full`` (the default rationale generator, or ``--generator``);
* conditions:

  - ``cold``: nothing cached: an empty rationale cache (a new file per thread setting),
    and the reranker's passage-embedding cache emptied before every query;
  - ``warm_rationales`` (``full`` only): the rationales come from the rationale cache,
    the passage-embedding cache is still emptied before every query;
  - ``warm_passages``: rationales cached, the passages' and rationales' embeddings in
    the reranker's passage-embedding cache (primed, untimed, with the dense index's
    stored vectors through ``PassageEmbeddingCache.put_many`` and one encode of the
    rationale texts) and the scorer's pair memory primed (one untimed
    ``evidence_logits`` call per question) — the repeated-query path of a RAG service;
  - ``stored_embeddings``: rationales cached, the candidates' embeddings passed in from
    the dense index (``DenseRetriever.embeddings_for``, the path ``Reranker.search``
    uses; the lookup is timed), the passage-embedding cache emptied before every query
    (rationale embeddings are computed).

Stages, measured by wrapping public methods of the reranker's objects: ``generation``
(``reranker.generator.generate``: the LM or a rationale-cache read), ``encode_rationales``
and ``encode_passages`` (``reranker.encoder.encode``, split by whether a text is one of
the query's candidates; cache lookups included), ``selection``
(``reranker.selector.select``), ``scoring`` (``reranker.scorer.evidence_logits``: the
evidence scorer's cross-encoder, whose pair memory is emptied with the passage cache) and
``other`` (the rest: validation, result objects,
embedding lookups). ``passages_encoded`` counts the candidates the encoder actually ran on
(cache misses), from which ``ms_per_passage_encoded`` is derived.

With ``--compare-cut band`` (the committed run), one more block, ``cut_comparison``: the
default ``Reranker()`` (the learned cut: the scorer reads stage 1's top 10) against the
same pipeline with ``SelectorSettings(cut="band")`` (the previous default: the scorer
reads every candidate that shares its document), both on the ``stored_embeddings``
path at the first ``--threads`` value, rationales cached, the scorer's pair memory and
the passage cache emptied before every call, the two interleaved per question (the
order alternating) so that load drift on a shared machine hits both alike; the ratio of
the mean times is the comparison.

The JSON result (``benchmarks/results/rerank_latency.json`` by default, written
atomically) holds the command, configuration, package versions, machine facts (CPU
count, load average at start and end: other processes may share the CPU), a compact
``summary`` (mean seconds per query per stage for every thread/mode/condition) and the
per-query rows; ``checks`` says whether the warm conditions selected what the cold one did.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from startup_latency import add_arguments, run_sections, sections_of

from meteora.bench.report import (
    command_line,
    environment_versions,
    load_average,
    write_results_json,
)

DEFAULT_OUTPUT = Path("benchmarks") / "results" / "rerank_latency.json"
STAGES = ("generation", "encode_rationales", "encode_passages", "scoring", "selection")
MODES = ("query_only", "full")
CONDITIONS = {
    "query_only": ("cold", "warm_passages", "stored_embeddings"),
    "full": ("cold", "warm_rationales", "warm_passages", "stored_embeddings"),
}
PACKAGES = ("meteora-rerank", "numpy", "torch", "transformers", "sentence-transformers", "bm25s", "faiss-cpu", "xllamacpp")


# ----------------------------------------------------------------------------- arguments
def _positive_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _modes(text: str) -> list[str]:
    values = [v.strip().replace("-", "_") for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in MODES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--limit", "--n", dest="limit", type=int, default=20, help="questions measured (default 20)")
    p.add_argument("--candidates", type=int, default=50, help="hybrid candidates per question (default 50)")
    p.add_argument("--split", choices=["test", "train", "all"], default="test", help="question split (default test)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up questions per thread setting (default 1)")
    p.add_argument("--threads", type=_positive_list, default=[1, 2], help="torch thread counts, e.g. 1,2 (default 1,2)")
    p.add_argument("--modes", type=_modes, default=list(MODES), help="query_only,full (default both)")
    p.add_argument("--generator", default="default", help="rationale LM for the full mode (default: the offline default)")
    p.add_argument("--template", default=None, help="prompt template (default: the model's)")
    p.add_argument("--n-rationales", type=int, default=None, help="rationales per query (default: template's)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation cap (default: template's)")
    p.add_argument("--window", type=int, default=None, help="expansion window (default: the Reranker's default)")
    p.add_argument("--embedding-model", default=None, help="encoder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--data", default=None, help="PubMedQA folder (default: $METEORA_DATA_DIR or ../shared/data)")
    p.add_argument(
        "--corpus-cache",
        default=None,
        help="folder of the on-disk embedding cache for the corpus (default $METEORA_HOME/passage-embeddings; "
        "'none' encodes the corpus without keeping it)",
    )
    p.add_argument("--compare-cut", default=None, choices=["band", "elbow"],
                   help="also time the default against this cut, interleaved per question (cut_comparison)")
    p.add_argument("--online", action="store_true", help="allow model hub access (default: HF_HUB_OFFLINE=1)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON result path (default {DEFAULT_OUTPUT})")
    add_arguments(p)
    args = p.parse_args(argv)
    for name in ("limit", "candidates"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    for name in ("warmup", "window"):
        value = getattr(args, name)
        if value is not None and value < 0:
            p.error(f"--{name} must be >= 0, got {value}")
    for name in ("n_rationales", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


# ----------------------------------------------------------------------------- reporting
def stats(values: Sequence[float]) -> dict[str, float]:
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




# ----------------------------------------------------------------------------- timing
class Stopwatch:
    """Time spent inside wrapped calls, per stage, for the current query."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.passage_texts: set[str] = set()

    def reset(self, passage_texts: set[str]) -> None:
        self.current, self.counts, self.passage_texts = {}, {}, passage_texts

    def add(self, label: str, seconds: float, count: int = 0) -> None:
        self.current[label] = self.current.get(label, 0.0) + seconds
        self.counts[label] = self.counts.get(label, 0) + count

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        """Replace ``obj.attr`` (a public method) with a timed version on that instance."""
        inner: Callable[..., Any] = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0, 1)

        setattr(obj, attr, timed)

    def wrap_encoder(self, encoder: Any) -> None:
        """Time ``encoder.encode``, splitting each call into passages (texts among the
        current candidates) and rationales (the rest) by their share of the texts, and
        count the candidates the model actually encoded (cache misses)."""
        inner: Callable[..., Any] = encoder.encode
        cache = encoder.cache

        def timed(texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
            texts = list(texts)
            n_pass = sum(t in self.passage_texts for t in texts)
            misses0 = cache.stats()["misses"] if cache is not None else 0
            t0 = time.perf_counter()
            try:
                return inner(texts, *args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                misses = (cache.stats()["misses"] - misses0) if cache is not None else len(texts)
                share = n_pass / len(texts) if texts else 0.0
                self.add("encode_passages", dt * share, 0)
                self.add("encode_rationales", dt * (1.0 - share), 0)
                # misses are attributed the same way (exact unless one call mixes both kinds)
                self.counts["passages_encoded"] = self.counts.get("passages_encoded", 0) + round(misses * share)
                self.counts["texts_encoded"] = self.counts.get("texts_encoded", 0) + misses
                if 0 < n_pass < len(texts):
                    self.counts["mixed_encode_calls"] = self.counts.get("mixed_encode_calls", 0) + 1

        encoder.encode = timed


def run_condition(
    label: str,
    reranker: Any,
    items: list[tuple[str, str, list[Any]]],
    watch: Stopwatch,
    *,
    clear_cache: bool,
    dense: Any = None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Time ``reranker.rerank`` on each question; per-query rows and a summary."""
    rows = []
    cache = reranker.encoder.cache
    for qid, question, passages in items:
        if clear_cache and cache is not None:
            cache.clear()
        if clear_cache and reranker.scorer is not None:
            reranker.scorer.clear_cache()
        watch.reset({p.text for p in passages})
        t0 = time.perf_counter()
        if dense is not None:
            emb = dense.embeddings_for([p.id for p in passages])
            res = reranker.rerank(question, passages, passage_embeddings=emb)
        else:
            res = reranker.rerank(question, passages)
        seconds = time.perf_counter() - t0
        parts = dict(watch.current)
        row = {
            "qid": qid,
            "seconds": round(seconds, 4),
            **{s: round(parts.get(s, 0.0), 4) for s in STAGES},
            "other": round(max(0.0, seconds - sum(parts.get(s, 0.0) for s in STAGES)), 4),
            "candidates": len(passages),
            "passages_encoded": watch.counts.get("passages_encoded", 0),
            "texts_encoded": watch.counts.get("texts_encoded", 0),
            "mixed_encode_calls": watch.counts.get("mixed_encode_calls", 0),
            "generate_calls": watch.counts.get("generation", 0),
            "rationales": len(res.rationales),
            "fallback": bool(res.fallback),
            "rationales_from_cache": bool(getattr(res.rationale_set, "from_cache", False)),
            "selected": res.selected_ids,
        }
        rows.append(row)
    per_stage = {s: round(float(np.mean([r[s] for r in rows])), 4) for s in (*STAGES, "other")}
    encoded = sum(r["passages_encoded"] for r in rows)
    enc_seconds = sum(r["encode_passages"] for r in rows)
    summary: dict[str, Any] = {
        "seconds_per_query": stats([r["seconds"] for r in rows]),
        "stage_mean_seconds": per_stage,
        "passages_encoded_per_query": round(encoded / len(rows), 2),
        "ms_per_passage_encoded": round(1000 * enc_seconds / encoded, 2) if encoded else None,
        "mean_selected": round(float(np.mean([len(r["selected"]) for r in rows])), 2),
        "mean_rationales": round(float(np.mean([r["rationales"] for r in rows])), 2),
        "fallback_rate": round(float(np.mean([r["fallback"] for r in rows])), 3),
        "rationale_cache_hit_rate": round(float(np.mean([r["rationales_from_cache"] for r in rows])), 3),
    }
    s = summary["seconds_per_query"]
    stages = "  ".join(f"{k} {v * 1000:.0f}" for k, v in per_stage.items())
    log(f"    {label:<18} mean {s['mean'] * 1000:8.1f} ms  median {s['median'] * 1000:8.1f} ms   [ms: {stages}]")
    return {"summary": summary, "per_query": rows}


# ----------------------------------------------------------------------------- setup
def build_candidates(args: argparse.Namespace, n_questions: int, log: Callable[[str], None]):
    """Corpus, dense retriever (its encoder has the on-disk corpus cache) and, for the
    first ``n_questions`` of the split, ``(qid, question, top-k candidates)``."""
    from meteora.datasets.pubmedqa import build_pubmedqa_benchmark
    from meteora.embeddings.cache import PassageEmbeddingCache
    from meteora.embeddings.encoder import Encoder
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever
    from meteora.settings import meteora_home

    bench = build_pubmedqa_benchmark(args.data)
    qids = list(bench.splits[args.split])[:n_questions]
    if len(qids) < n_questions:
        raise SystemExit(f"the {args.split} split has only {len(qids)} questions; lower --limit/--warmup")
    if args.corpus_cache == "none":
        corpus_cache: Any = False
    else:
        corpus_cache = PassageEmbeddingCache(
            0, path=Path(args.corpus_cache) if args.corpus_cache else meteora_home() / "passage-embeddings"
        )
    index_encoder = Encoder(args.embedding_model, cache=corpus_cache)
    t0 = time.perf_counter()
    dense = DenseRetriever(index_encoder).index(bench.corpus)
    log(f"  dense index of {len(bench.corpus)} chunks in {time.perf_counter() - t0:.1f} s")
    hybrid = HybridRetriever([BM25Retriever().index(bench.corpus), dense], fusion="rrf", rrf_k=60, candidate_k=100)
    questions = [bench.queries[q] for q in qids]
    rankings = hybrid.search(questions, k=args.candidates)
    items = [(qid, q, list(r.passages)) for qid, q, r in zip(qids, questions, rankings, strict=True)]
    corpus_stats = None
    if corpus_cache is not False:
        corpus_stats = {k: v for k, v in corpus_cache.stats().items() if k != "path"}  # no local paths in results
        corpus_stats["location"] = args.corpus_cache or "$METEORA_HOME/passage-embeddings"
    return items, dense, index_encoder, corpus_stats


def prime_passage_cache(encoder: Any, dense: Any, items: list[tuple[str, str, list[Any]]], rationale_texts: list[str]) -> None:
    """Put the candidates' stored embeddings into ``encoder``'s cache and encode the
    rationale texts once, so that every embedding the next run needs is cached."""
    from meteora.embeddings.cache import text_key

    cache, ident = encoder.cache, encoder.identity
    for _, _, passages in items:
        cache.put_many(ident, [text_key(p.text) for p in passages], dense.embeddings_for([p.id for p in passages]))
    if rationale_texts:
        encoder.encode(rationale_texts)


def compare_cuts(
    reranker: Any, other_cut: str, items: list[tuple[str, str, list[Any]]], dense: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """The default ``reranker`` against the same pipeline with ``cut=other_cut`` on the
    stored-embeddings path, interleaved per question (see the module doc)."""
    from meteora import Reranker

    other = Reranker(reranker.generator, reranker.encoder, reranker.scorer, reranker.settings.replace(cut=other_cut))
    runs = {"default": reranker, other_cut: other}
    pairs = {"n": 0}
    if reranker.scorer is not None:
        inner = reranker.scorer.evidence_logits

        def counting(queries: Any, lists: Any) -> Any:
            pairs["n"] += sum(len(x) for x in lists)
            return inner(queries, lists)

        reranker.scorer.evidence_logits = counting
    for _, q, ps in items:  # rationales into the cache; kernels warm
        reranker.rerank(q, ps, passage_embeddings=dense.embeddings_for([p.id for p in ps]))
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for i, (qid, q, ps) in enumerate(items):
        for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            rr = runs[name]
            rr.encoder.cache.clear()
            if rr.scorer is not None:
                rr.scorer.clear_cache()
            pairs["n"] = 0
            t0 = time.perf_counter()
            res = rr.rerank(q, ps, passage_embeddings=dense.embeddings_for([p.id for p in ps]))
            rows[name].append({"qid": qid, "seconds": round(time.perf_counter() - t0, 4), "scorer_pairs": pairs["n"],
                               "selected": len(res.selected), "cut": res.selection.explanation.cut})
    out: dict[str, Any] = {"condition": "stored_embeddings, rationales cached, scorer memory emptied per call",
                           "interleaved": True}
    for name, r in rows.items():
        out[name] = {
            "cut": r[0]["cut"],
            "seconds_per_query": stats([x["seconds"] for x in r]),
            "scorer_pairs_per_query": round(float(np.mean([x["scorer_pairs"] for x in r])), 2),
            "mean_selected": round(float(np.mean([x["selected"] for x in r])), 2),
        }
    out["ratio_default_over_" + other_cut] = round(
        out["default"]["seconds_per_query"]["mean"] / out[other_cut]["seconds_per_query"]["mean"], 3
    )
    log(f"  cut comparison: default {out['default']['seconds_per_query']['mean']:.3f} s/query "
        f"({out['default']['scorer_pairs_per_query']} pairs), {other_cut} {out[other_cut]['seconds_per_query']['mean']:.3f} "
        f"({out[other_cut]['scorer_pairs_per_query']} pairs): ratio {out['ratio_default_over_' + other_cut]}")
    return out


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not args.online:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def log(msg: str) -> None:
        print(msg, flush=True)

    sections = sections_of(args)
    startup_sections = run_sections(args, sections, log)  # fresh processes: before this one imports torch
    kept = json.loads(args.output.read_text(encoding="utf-8")) if args.output.is_file() else {}
    if "per_query" not in sections:
        report = {**kept, **startup_sections}
        write_results_json(args.output, report)
        log(f"wrote {', '.join(startup_sections)} into {args.output}")
        return report

    started = time.perf_counter()
    import torch

    from meteora import Reranker
    from meteora.embeddings.cache import PassageEmbeddingCache
    from meteora.embeddings.encoder import Encoder
    from meteora.selection.selector_settings import SelectorSettings
    from meteora.settings import set_num_threads

    report: dict[str, Any] = {
        "command": command_line(),
        "config": {
            "n_questions": args.limit,
            "warmup_questions": args.warmup,
            "split": args.split,
            "candidates": args.candidates,
            "candidate_source": "hybrid (BM25 + dense, RRF k=60, 100 fused) top-k over the PubMedQA chunks",
            "threads": args.threads,
            "modes": args.modes,
            "window": args.window if args.window is not None else "Reranker default",
            "cut": "Reranker default (learned)",
            "compare_cut": args.compare_cut,
            "generator": args.generator,
            "template": args.template,
            "n_rationales": args.n_rationales,
            "max_new_tokens": args.max_new_tokens,
            "embedding_model": args.embedding_model or "default (all-MiniLM-L6-v2, packaged)",
            "one_query_per_call": True,
            "warm_passages_priming": "candidates' stored index embeddings via PassageEmbeddingCache.put_many, "
            "plus one untimed encode of the rationale texts",
        },
        "versions": environment_versions(PACKAGES),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": load_average(),
        },
        "setup_seconds": {},
        "results": {},
    }

    set_num_threads(args.threads[0])
    n_total = args.limit + args.warmup
    log(f"building PubMedQA hybrid top-{args.candidates} candidates for {args.limit} + {args.warmup} questions ...")
    t0 = time.perf_counter()
    items, dense, index_encoder, corpus_stats = build_candidates(args, n_total, log)
    report["setup_seconds"]["candidates"] = round(time.perf_counter() - t0, 2)
    report["setup_seconds"]["corpus_cache"] = corpus_stats
    warm_items, measured = items[: args.warmup], items[args.warmup :]
    report["config"]["question_ids"] = [qid for qid, _, _ in measured]

    # the measured encoder: the same model object, its own (default-sized) in-memory cache
    encoder = Encoder(index_encoder.model, cache=PassageEmbeddingCache())
    encoder.name = index_encoder.name
    watch = Stopwatch()
    watch.wrap_encoder(encoder)
    settings = SelectorSettings() if args.window is None else SelectorSettings(window=args.window)
    results: dict[str, Any] = report["results"]

    with tempfile.TemporaryDirectory(prefix="meteora-latency-") as tmp:
        for threads in args.threads:
            set_num_threads(threads)
            key_t = f"threads_{threads}"
            results[key_t] = {}
            rerankers: dict[str, Any] = {}
            if "query_only" in args.modes:
                rerankers["query_only"] = Reranker(None, encoder, settings=settings)
            if "full" in args.modes:
                t0 = time.perf_counter()
                generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
                rerankers["full"] = Reranker.from_pretrained(
                    args.generator,
                    encoder,
                    settings=settings,
                    template=args.template,
                    n_rationales=args.n_rationales,
                    generation=generation,
                    num_threads=threads,
                    cache=Path(tmp) / f"rationales-{threads}.sqlite",  # empty: cold
                )
                report["setup_seconds"][f"load_generator_{key_t}"] = round(time.perf_counter() - t0, 2)
                gen = rerankers["full"].generator
                report["config"]["generator_model_id"] = getattr(gen, "model_id", None)
                report["config"]["generator_backend"] = getattr(gen, "backend", None)
                report["config"]["template_used"] = getattr(getattr(gen, "template", None), "name", None)
                if hasattr(gen, "generate"):
                    watch.wrap(gen, "generate", "generation")
            for rr in rerankers.values():
                report["config"]["runtime"] = {"encoder": getattr(rr.encoder, "runtime", None),
                                               "scorer": getattr(rr.scorer, "runtime", None)}
                watch.wrap(rr.selector, "select", "selection")
                if rr.scorer is not None:
                    watch.wrap(rr.scorer, "evidence_logits", "scoring")
            t0 = time.perf_counter()
            for _, q, ps in warm_items:  # lazy initialisation, prefix caches; not measured
                for rr in rerankers.values():
                    rr.rerank(q, ps)
            report["setup_seconds"][f"warmup_{key_t}"] = round(time.perf_counter() - t0, 2)

            for mode, rr in rerankers.items():
                log(f"  {threads} thread(s), {mode}: rerank() on {len(measured)} questions x {args.candidates} candidates")
                out: dict[str, Any] = {}
                encoder.cache.clear()
                out["cold"] = run_condition("cold", rr, measured, watch, clear_cache=True, log=log)
                if mode == "full":
                    out["warm_rationales"] = run_condition("warm_rationales", rr, measured, watch, clear_cache=True, log=log)
                rationale_texts = sorted({t for _, q, _ in measured for t in _rationales_of(rr, q)})
                prime_passage_cache(encoder, dense, measured, rationale_texts)
                if rr.scorer is not None:  # the scorer has read these (query, passage) pairs before
                    for _, q, ps in measured:
                        rr.scorer.evidence_logits([q], [[p.text for p in ps]])
                out["warm_passages"] = run_condition("warm_passages", rr, measured, watch, clear_cache=False, log=log)
                out["stored_embeddings"] = run_condition(
                    "stored_embeddings", rr, measured, watch, clear_cache=True, dense=dense, log=log
                )
                results[key_t][mode] = out

        if args.compare_cut:
            set_num_threads(args.threads[0])
            full = Reranker.from_pretrained(
                args.generator, encoder, settings=settings, template=args.template, n_rationales=args.n_rationales,
                num_threads=args.threads[0], cache=Path(tmp) / "rationales-cut-comparison.sqlite",
            )
            report["cut_comparison"] = {
                "threads": args.threads[0],
                **compare_cuts(full, args.compare_cut, measured, dense, log),
            }

    # ------------------------------------------------------------------ summary and checks
    summary: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for key_t, by_mode in results.items():
        summary[key_t] = {}
        for mode, by_cond in by_mode.items():
            summary[key_t][mode] = {
                cond: {
                    "seconds_per_query_mean": r["summary"]["seconds_per_query"]["mean"],
                    "seconds_per_query_median": r["summary"]["seconds_per_query"]["median"],
                    **r["summary"]["stage_mean_seconds"],
                    "passages_encoded_per_query": r["summary"]["passages_encoded_per_query"],
                    "ms_per_passage_encoded": r["summary"]["ms_per_passage_encoded"],
                }
                for cond, r in by_cond.items()
            }
            cold = by_cond["cold"]["per_query"]
            for cond, r in by_cond.items():
                if cond == "cold":
                    continue
                same = all(a["selected"] == b["selected"] for a, b in zip(cold, r["per_query"], strict=True))
                checks[f"{key_t}.{mode}.{cond}_selection_equals_cold"] = same
            if mode == "full":
                checks[f"{key_t}.full.warm_rationales_all_from_cache"] = all(
                    r["rationales_from_cache"] for r in by_cond["warm_rationales"]["per_query"]
                )
            checks[f"{key_t}.{mode}.warm_passages_encoded_nothing"] = all(
                r["texts_encoded"] == 0 for r in by_cond["warm_passages"]["per_query"]
            )
    report["summary"] = summary
    report["checks"] = checks
    report["machine"]["loadavg_end"] = load_average()
    report["machine"]["torch_threads_end"] = torch.get_num_threads()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    # the start-up sections not run this time stay as they were, with their own command
    report.update({k: kept[k] for k in ("startup", "runtime_agreement") if k in kept}, **startup_sections)
    write_results_json(args.output, report)
    log(f"checks: {json.dumps(checks)}")
    log(f"wrote {args.output} ({report['total_seconds']} s)")
    return report


def _rationales_of(reranker: Any, question: str) -> list[str]:
    """The rationale texts ``reranker`` uses for ``question`` (from its rationale cache
    after a first run; the query itself in query-only mode)."""
    return [t for texts, _ in reranker.rationales_for([question]) for t in texts]


if __name__ == "__main__":
    main()
