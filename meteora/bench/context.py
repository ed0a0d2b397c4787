"""The lazily built context (corpus, encoder, retrievers, generator) a benchmark's
methods share, and :class:`MethodOutput`, what each method returns.

The datasets it builds are registered in :mod:`meteora.bench.datasets`, or given directly: ``BenchmarkContext(config, benchmark=my_benchmark)``.

Example:
    >>> from meteora.bench.config import BenchmarkConfig
    >>> ctx = BenchmarkContext(BenchmarkConfig(methods=["bm25"], limit=5))  # doctest: +SKIP
    >>> len(ctx.qids)  # doctest: +SKIP
    5
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meteora.bench.datasets import build_benchmark
from meteora.console import progress_enabled
from meteora.errors import InvalidInputError

if TYPE_CHECKING:
    from meteora.bench.config import BenchmarkConfig

__all__ = ["BenchmarkContext", "MethodOutput"]

logger = logging.getLogger(__name__)


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
    """Lazily builds and shares what several methods need (corpus, retrievers, encoder).

    Args:
        config: the run's settings.
        benchmark: a :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` to use
            instead of building ``config.dataset`` from ``config.data_path``.
        generator: a rationale generator (anything with ``.generate``) for the METEORA
            methods instead of the one built from ``config.options``.

    Example:
        >>> ctx = BenchmarkContext(BenchmarkConfig(split="test", limit=10))  # doctest: +SKIP
        >>> ctx.retriever("hybrid")  # doctest: +SKIP
    """

    def __init__(
        self, config: BenchmarkConfig, *, benchmark: Any = None, generator: Any = None, scorer: Any = None
    ) -> None:
        self.config = config
        self.data = benchmark if benchmark is not None else build_benchmark(config.dataset, config.data_path)
        self.qids = self.data.query_ids(config.split, limit=config.limit)
        self.queries = [self.data.queries[q] for q in self.qids]
        self._generator = generator
        self._scorer = scorer
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
        from meteora.embeddings.encoder import Encoder

        return self.shared("encoder", lambda: Encoder(self.config.embedding_model))

    def generator(self):
        """The rationale generator of the METEORA methods (built once, with the
        persistent rationale cache, from ``config.options``).

        Backend options: ``backend`` (``"auto"`` by default), ``base_url`` (an
        OpenAI-compatible server) and ``lm_options`` (that backend's own options, e.g.
        ``{"concurrency": 8}``). The server's API key is never an option (options are
        written into the results file): it is read from ``$METEORA_API_KEY`` or
        ``$OPENAI_API_KEY``.

        Example:
            >>> cfg = BenchmarkConfig(methods=["meteora"], options={  # doctest: +SKIP
            ...     "generator": "med-rationale", "backend": "openai",
            ...     "base_url": "http://127.0.0.1:8000/v1", "lm_options": {"concurrency": 8}})
            >>> BenchmarkContext(cfg).generator().backend  # doctest: +SKIP
            'openai'
        """

        def build():
            if self._generator is not None:
                return self._generator
            import os

            from meteora.rationales.generator import RationaleGenerator

            opts = self.config.options
            backend = opts.get("backend") or "auto"
            base_url = opts.get("base_url")
            api_key = None
            if backend == "openai" or base_url:
                api_key = os.environ.get("METEORA_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
            return RationaleGenerator.from_pretrained(
                opts.get("generator"),
                adapter=opts.get("adapter"),
                template=opts.get("template"),
                num_threads=self.config.num_threads,
                cache=True,
                backend=backend,
                base_url=base_url,
                api_key=api_key,
                lm_options=dict(opts.get("lm_options") or {}) or None,
            )

        return self.shared("generator", build)

    def scorer(self):
        """The evidence scorer of the METEORA methods that use one (built once; its
        pair memory is shared by every method of the run, and its logits are kept in
        ``$METEORA_HOME/scorer_logits.sqlite`` so reruns score nothing twice):
        ``options["scorer"]`` is ``"default"`` (the packaged adapter, the default), an
        adapter folder, or ``"none"``."""

        def build():
            from meteora.scorer import EvidenceScorer

            if self._scorer is not None:
                return self._scorer
            choice = self.config.options.get("scorer") or "default"
            if str(choice).lower() == "none":
                return None
            return EvidenceScorer(choice, cache_path=True)

        return self.shared("scorer", build)

    def corpus_embeddings(self):
        """Corpus embeddings, cached on disk under ``$METEORA_HOME/embeddings`` (keyed by
        the dataset name, the encoder name and a hash of the corpus) so reruns skip the
        encoding."""
        import hashlib

        import numpy as np

        from meteora._io import atomic_save_npy
        from meteora.settings import meteora_home

        encoder = self.encoder()
        name = str(self.data.name)
        h = hashlib.sha256(name.encode() + b"\0" + encoder.name.encode())
        for p in self.data.corpus:
            h.update(b"\0" + p.id.encode() + b"\0" + p.text.encode())
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "corpus"
        path = meteora_home() / "embeddings" / f"{safe}-{h.hexdigest()[:20]}.npy"
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
        emb = encoder.encode([p.text for p in self.data.corpus], show_progress=progress_enabled())
        self.timings["encode:corpus"] = time.perf_counter() - t0
        atomic_save_npy(path, emb)
        return emb

    def retriever(self, name: str):
        from meteora.retrievers.bm25 import BM25Retriever
        from meteora.retrievers.dense import DenseRetriever
        from meteora.retrievers.hybrid import HybridRetriever

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
        raise InvalidInputError(f"unknown retriever {name!r}; use 'bm25', 'dense' or 'hybrid'")

    def rankings(self, name: str, k: int | None = None):
        """Rankings of every benchmark query by retriever ``name`` (cached per k)."""
        k = k or self.config.retrieve_k
        return self.shared(f"rankings:{name}:{k}", lambda: self.retriever(name).search(self.queries, k=k))
