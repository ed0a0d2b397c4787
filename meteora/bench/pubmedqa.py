"""The PubMedQA retrieval and evidence-selection benchmark (``meteora bench pubmedqa``).

Corpus: every context chunk of the 1000 PQA-L abstracts (3,358 chunks). Queries: the
questions of a split (``test`` = the 500 official test questions, ``train``, ``all``).
Two relevance views: ``abstract`` (all chunks of the question's own abstract) and
``evidence`` (only its RESULTS chunks). Section labels are used for scoring only; no
method ever sees them.

Every method is run on the same queries over the same corpus. Ranking methods report
NDCG@10, Recall@k, MRR@10 and MAP; every method also gets set metrics — a fixed-k
baseline ``name@k`` keeps its top k, a selection method keeps what it selects.

Example:
    >>> cfg = BenchmarkConfig(methods=["bm25"], split="test", limit=20)
    >>> results = run_benchmark(cfg)  # doctest: +SKIP
    >>> results["views"]["abstract"]["methods"]["bm25"]["NDCG@10"]  # doctest: +SKIP
    0.78...
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_json
from meteora.bench.report import environment_versions, format_table, plot_recall_vs_chunks
from meteora.errors import InvalidInputError

__all__ = ["BenchmarkConfig", "MethodOutput", "BenchmarkContext", "run_benchmark", "RETRIEVAL_METHODS", "METHOD_RUNNERS"]

logger = logging.getLogger(__name__)

RANKING_METRICS = ("NDCG@10", "Recall@1", "Recall@5", "Recall@10", "Recall@20", "Recall@50", "MRR@10", "MAP")
SET_METRICS = ("precision", "recall", "F1", "mean_chunks")
VIEWS = ("abstract", "evidence")


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (all of them are written into the results JSON)."""

    methods: list[str] = field(default_factory=lambda: ["bm25", "dense", "hybrid"])
    split: str = "test"
    limit: int | None = None
    views: list[str] = field(default_factory=lambda: list(VIEWS))
    ks: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 8, 16, 32])
    retrieve_k: int = 100
    rrf_k: int = 60
    candidates: int = 50
    embedding_model: str | None = None
    data_path: str | None = None
    out_dir: str = "benchmarks/results"
    num_threads: int | None = None
    plot: bool = True
    tag: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.tag is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.tag):
            raise InvalidInputError(f"tag must be letters, digits, '_', '-' or '.', got {self.tag!r}")
        if self.split not in ("test", "train", "all"):
            raise InvalidInputError(f"split must be 'test', 'train' or 'all', got {self.split!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidInputError(f"limit must be a positive integer, got {self.limit!r}")
        if isinstance(self.methods, str):
            raise InvalidInputError(f"methods must be a list of method names, got the string {self.methods!r}")
        unknown_views = [v for v in self.views if v not in VIEWS]
        if unknown_views:
            raise InvalidInputError(f"unknown qrels views {unknown_views}; choose from {list(VIEWS)}")
        unknown = [m for m in self.methods if get_runner(m) is None]
        if unknown:
            raise InvalidInputError(f"unknown methods {unknown}; available: {sorted(METHOD_RUNNERS)}")
        if not self.methods:
            raise InvalidInputError("no methods given; pass e.g. --methods bm25,dense,hybrid")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise InvalidInputError(f"every k must be positive, got {self.ks}")

    def results_stem(self) -> str:
        stem = f"pubmedqa_{self.split}"
        if self.limit is not None:
            stem += f"_n{self.limit}"
        return f"{stem}_{self.tag}" if self.tag else stem


@dataclass
class MethodOutput:
    """What one method produced for the benchmark's queries.

    ``run``: full rankings ``{qid: {pid: score}}`` (for ranking metrics and fixed-k sets);
    ``selections``: selected ids per query (for selection methods); ``seconds``: wall time
    of the method itself (index build + search, or selection); ``extra``: anything to
    record next to the metrics.
    """

    run: dict[str, dict[str, float]] | None = None
    selections: dict[str, list[str]] | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    fixed_k: bool = True


class BenchmarkContext:
    """Lazily builds and shares what several methods need (corpus, retrievers, encoder)."""

    def __init__(self, config: BenchmarkConfig) -> None:
        from meteora.datasets.pubmedqa import build_pubmedqa_benchmark

        self.config = config
        self.data = build_pubmedqa_benchmark(config.data_path)
        self.qids = self.data.query_ids(config.split, limit=config.limit)
        self.queries = [self.data.queries[q] for q in self.qids]
        self._cache: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.embeddings_cached = False

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """Build ``key`` once; remember how long it took in ``timings``."""
        if key not in self._cache:
            t0 = time.perf_counter()
            self._cache[key] = build()
            self.timings[key] = time.perf_counter() - t0
        return self._cache[key]

    def encoder(self):
        from meteora.embeddings import Encoder

        return self.shared("encoder", lambda: Encoder(self.config.embedding_model, num_threads=self.config.num_threads))

    def corpus_embeddings(self):
        """Corpus embeddings, cached on disk under ``$METEORA_HOME/embeddings`` (keyed by
        the encoder name and a hash of the corpus) so reruns skip the encoding."""
        import hashlib

        import numpy as np

        from meteora._io import atomic_save_npy
        from meteora.settings import meteora_home

        encoder = self.encoder()
        h = hashlib.sha256(encoder.name.encode())
        for p in self.data.corpus:
            h.update(b"\0" + p.id.encode() + b"\0" + p.text.encode())
        path = meteora_home() / "embeddings" / f"pubmedqa-{h.hexdigest()[:20]}.npy"
        if path.exists() and not self.config.options.get("no_embedding_cache"):
            try:
                emb = np.load(path, allow_pickle=False)
                if emb.shape == (len(self.data.corpus), encoder.dim):
                    self.embeddings_cached = True
                    logger.info("corpus embeddings loaded from cache %s", path)
                    return emb
            except (ValueError, OSError) as exc:
                logger.warning("ignoring unreadable embedding cache %s (%s); re-encoding", path, exc)
        t0 = time.perf_counter()
        emb = encoder.encode([p.text for p in self.data.corpus], show_progress=True)
        self.timings["encode:corpus"] = time.perf_counter() - t0
        atomic_save_npy(path, emb)
        return emb

    def retriever(self, name: str):
        from meteora.retrievers import BM25Retriever, DenseRetriever, HybridRetriever

        if name == "bm25":
            return self.shared("index:bm25", lambda: BM25Retriever().index(self.data.corpus))
        if name == "dense":
            return self.shared(
                "index:dense",
                lambda: DenseRetriever(self.encoder()).index(self.data.corpus, embeddings=self.corpus_embeddings()),
            )
        if name == "hybrid":
            bm25, dense = self.retriever("bm25"), self.retriever("dense")
            return self.shared(
                "index:hybrid",
                lambda: HybridRetriever(
                    [bm25, dense], fusion="rrf", rrf_k=self.config.rrf_k, candidate_k=self.config.retrieve_k
                ),
            )
        raise InvalidInputError(f"unknown retriever {name!r}")

    def rankings(self, name: str, k: int | None = None):
        """Rankings of every benchmark query by retriever ``name`` (cached per k)."""
        k = k or self.config.retrieve_k
        return self.shared(f"rankings:{name}:{k}", lambda: self.retriever(name).search(self.queries, k=k))


def _run_retrieval(name: str) -> Callable[[BenchmarkContext], MethodOutput]:
    def run(ctx: BenchmarkContext) -> MethodOutput:
        ctx.retriever(name)
        index_s = sum(v for key, v in ctx.timings.items() if key.startswith("index:") and (name == "hybrid" or key == f"index:{name}"))
        if name in ("dense", "hybrid"):
            index_s += ctx.timings.get("encoder", 0.0)
        t0 = time.perf_counter()
        rankings = ctx.rankings(name)
        search_s = time.perf_counter() - t0
        run_dict = {qid: r.to_run() for qid, r in zip(ctx.qids, rankings, strict=True)}
        extra = {"index_seconds": index_s, "search_seconds": search_s, "queries/s": len(ctx.qids) / max(search_s, 1e-9)}
        if name in ("dense", "hybrid"):
            extra["corpus_embeddings_cached"] = ctx.embeddings_cached
        return MethodOutput(run=run_dict, seconds=index_s + search_s, extra=extra)

    return run


RETRIEVAL_METHODS = ("bm25", "dense", "hybrid")
METHOD_RUNNERS: dict[str, Callable[[BenchmarkContext], MethodOutput]] = {m: _run_retrieval(m) for m in RETRIEVAL_METHODS}


def register_method(name: str, runner: Callable[[BenchmarkContext], MethodOutput]) -> None:
    """Add a method to the benchmark (used by the METEORA methods)."""
    METHOD_RUNNERS[name] = runner


def get_runner(name: str) -> Callable[[BenchmarkContext], MethodOutput] | None:
    """The runner of a method name, including METEORA variants with a ``-wN`` suffix."""
    from meteora.bench import meteora_methods

    return METHOD_RUNNERS.get(name) or meteora_methods.resolve_meteora_method(name)


def _score_view(view: str, ctx: BenchmarkContext, outputs: dict[str, MethodOutput]) -> dict[str, Any]:
    from meteora.metrics import evaluate_ranking, fixed_k_selections, set_metrics

    qrels = ctx.data.qrels_for(view, ctx.qids)
    methods: dict[str, dict[str, Any]] = {}
    for name, out in outputs.items():
        entry: dict[str, Any] = {}
        if out.run is not None:
            run = {q: out.run.get(q, {}) for q in qrels}
            entry.update(evaluate_ranking(qrels, run, RANKING_METRICS))
        if out.selections is not None:
            sel = {q: out.selections.get(q, []) for q in qrels}
            entry.update({k: v for k, v in set_metrics(qrels, sel).items() if k != "n_queries"})
        entry["seconds"] = out.seconds
        entry.update(out.extra)
        methods[name] = entry
        if out.run is not None and out.fixed_k:
            run = {q: out.run.get(q, {}) for q in qrels}
            for k in ctx.config.ks:
                m = set_metrics(qrels, fixed_k_selections(run, k))
                methods[f"{name}@{k}"] = {key: m[key] for key in (*SET_METRICS, "F1_macro", "median_chunks") if key in m}
    return {"n_queries": len(qrels), "methods": methods}


def run_benchmark(config: BenchmarkConfig, *, command: str | None = None, write: bool = True) -> dict[str, Any]:
    """Run every configured method, score both views, print tables, write JSON + PNG.

    Returns the results dict (the same content as the JSON file).
    """
    from meteora.settings import apply_thread_setting

    config.validate()
    apply_thread_setting(config.num_threads)
    t_start = time.perf_counter()
    ctx = BenchmarkContext(config)
    logger.info("PubMedQA: %d queries (%s split), %d chunks", len(ctx.qids), config.split, len(ctx.data.corpus))
    outputs: dict[str, MethodOutput] = {}
    for name in config.methods:
        logger.info("running %s", name)
        runner = get_runner(name)
        assert runner is not None
        outputs[name] = runner(ctx)
    views = {view: _score_view(view, ctx, outputs) for view in config.views}
    results: dict[str, Any] = {
        "command": command or "meteora " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config": asdict(config),
        "versions": environment_versions(),
        "dataset": {
            "name": "PubMedQA PQA-L",
            "corpus_chunks": len(ctx.data.corpus),
            "queries": len(ctx.qids),
            "split": config.split,
        },
        "views": views,
        "total_seconds": time.perf_counter() - t_start,
    }
    if write:
        out_dir = Path(config.out_dir)
        json_path = out_dir / f"{config.results_stem()}.json"
        atomic_write_json(json_path, results)
        results_path = str(json_path)
        if config.plot:
            png = plot_recall_vs_chunks(views, out_dir / f"{config.results_stem()}.png", title=f"PubMedQA {config.split}")
            if png is not None:
                logger.info("wrote %s", png)
        logger.info("wrote %s", results_path)
    return results


def format_results(results: dict[str, Any], *, ks_shown: Sequence[int] = (1, 3, 5, 8)) -> str:
    """Console tables: ranking metrics per view, then set metrics of selections and fixed-k."""
    lines = []
    for view, data in results["views"].items():
        methods = data["methods"]
        ranked = {n: m for n, m in methods.items() if "NDCG@10" in m}
        lines.append(f"\n== {view} view ({data['n_queries']} queries) — ranking ==")
        lines.append(format_table(ranked, ["NDCG@10", "Recall@5", "Recall@10", "Recall@50", "MRR@10", "MAP", "seconds"]))
        sets = {
            n: m
            for n, m in methods.items()
            if "precision" in m and ("@" not in n or int(n.rpartition("@")[2]) in ks_shown)
        }
        if sets:
            lines.append(f"\n== {view} view — sets (precision/recall over chunk ids) ==")
            lines.append(format_table(sets, ["precision", "recall", "F1", "mean_chunks"]))
    return "\n".join(lines)
