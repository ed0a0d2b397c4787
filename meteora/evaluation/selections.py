"""Context selections for the QA conditions: which passages each question's reader sees.

The retrieval side of :func:`meteora.evaluation.qa.evaluate_qa`: one hybrid (BM25 +
dense, RRF) retriever over the benchmark's corpus (:func:`build_retriever`), the
candidate pool of each query with its embeddings (:func:`candidate_pools`), and the
``{qid: [passage_id, ...]}`` selections of the ``fixed-k`` condition
(:func:`fixed_k_selections`, the retriever's top ``k``) and of the ``meteora``
conditions (:func:`meteora_selections`, :meth:`meteora.Reranker.search_batch`).

Example:
    >>> from meteora.evaluation.selections import build_retriever, fixed_k_selections, meteora_selections  # doctest: +SKIP
    >>> retriever = build_retriever(bench)                                # doctest: +SKIP
    >>> qids = bench.query_ids("test")                                    # doctest: +SKIP
    >>> top3 = fixed_k_selections(bench, qids, retriever=retriever, k=3)  # doctest: +SKIP
    >>> chosen = meteora_selections(bench, qids, retriever=retriever)     # doctest: +SKIP
    >>> sel = {"fixed-k": top3, "meteora": chosen}                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.types import Passage

if TYPE_CHECKING:
    from meteora.selection.selector_settings import SelectorSettings

__all__ = [
    "build_retriever",
    "candidate_pools",
    "fixed_k_selections",
    "meteora_selections",
]

logger = logging.getLogger(__name__)


def build_retriever(
    benchmark: Any, encoder: Any = None, *, candidate_k: int = 100, bm25_backend: str = "auto"
) -> Any:
    """A :class:`~meteora.retrievers.HybridRetriever` (BM25 + dense, RRF) over the benchmark's corpus.

    Build it once and pass it to :func:`meteora_selections`, :func:`fixed_k_selections`,
    :func:`evaluate_qa` and the preference builder: the dense member keeps the corpus
    embeddings, which the evidence selector reuses. ``bm25_backend`` goes to
    :class:`~meteora.retrievers.BM25Retriever` (``"numpy"`` skips numba's compile time
    on small corpora).

    Example:
        >>> r = build_retriever(bench, encoder)  # doctest: +SKIP
    """
    from meteora.retrievers.bm25 import BM25Retriever
    from meteora.retrievers.dense import DenseRetriever
    from meteora.retrievers.hybrid import HybridRetriever

    retriever = HybridRetriever(
        [BM25Retriever(backend=bm25_backend), DenseRetriever(encoder)], candidate_k=candidate_k
    )
    return retriever.index(benchmark.corpus)


def candidate_pools(
    benchmark: Any,
    qids: Sequence[str],
    *,
    retriever: Any = None,
    encoder: Any = None,
    candidates: int = 50,
) -> tuple[list[list[Passage]], list[np.ndarray], Any]:
    """The top-``candidates`` passages of each query and their embeddings.

    Retrieval is :meth:`meteora.Reranker.retrieve` (the pipeline's own): embeddings are
    the dense retriever's stored corpus embeddings when the encoder is that retriever's
    (nothing is re-encoded); with another ``encoder`` the candidates are encoded once each.

    Returns:
        ``(pools, embeddings, encoder)``: a passage list and a ``(len(pool), d)`` array
        per query, and the encoder to embed rationales with.

    Example:
        >>> pools, embs, enc = candidate_pools(bench, ["21645374"], retriever=r)  # doctest: +SKIP
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise InvalidInputError(f"candidates must be a positive integer, got {candidates!r}")
    qids = list(qids)
    reranker, retriever = _reranker(benchmark, retriever, encoder, scorer=None)
    encoder = reranker.encoder
    if not qids:
        return [], [], encoder
    found = reranker.retrieve([benchmark.queries[q] for q in qids], retriever, k=candidates)
    pools = [list(p.passages) for p in found]
    missing = [i for i, p in enumerate(found) if p.embeddings is None and p.passages]
    if missing:
        logger.info("candidate passages are encoded with %r (no dense retriever with this encoder)", encoder)
        unique: dict[str, str] = {}
        for i in missing:
            for p in found[i].passages:
                unique.setdefault(p.id, p.text)
        ids = list(unique)
        mat = np.asarray(encoder.encode([unique[i] for i in ids]), dtype=np.float32)
        row = {pid: k for k, pid in enumerate(ids)}
        for i in missing:
            found[i].embeddings = mat[[row[p.id] for p in found[i].passages]]
    embs = [
        p.embeddings if p.embeddings is not None else np.zeros((0, encoder.dim), dtype=np.float32) for p in found
    ]
    return pools, embs, encoder


def _reranker(
    benchmark: Any, retriever: Any, encoder: Any, generator: Any = None, **kwargs: Any
) -> tuple[Any, Any]:
    """A :class:`~meteora.Reranker` with ``generator`` (``None``: query-only) on ``encoder``
    (default: the dense retriever's, whose stored embeddings it then reuses), and the
    retriever (default: :func:`build_retriever`)."""
    from meteora.pipeline import dense_member
    from meteora.reranker import Reranker

    if retriever is None:
        retriever = build_retriever(benchmark, encoder)
    if encoder is None:
        dense = dense_member(retriever)
        encoder = dense.encoder if dense is not None else None
    return Reranker(generator=generator, encoder=encoder, **kwargs), retriever


def fixed_k_selections(
    benchmark: Any, qids: Sequence[str], *, retriever: Any = None, k: int = 3
) -> dict[str, list[str]]:
    """The top ``k`` passage ids of ``retriever`` (default: a new hybrid) for each query.

    Example:
        >>> fixed_k_selections(bench, qids, retriever=r, k=3)  # doctest: +SKIP
        {'12377809': ['12377809-1', '12377809-0', '12377809-2'], ...}
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    qids = list(qids)
    if not qids:
        return {}
    if retriever is None:
        retriever = build_retriever(benchmark)
    rankings = retriever.search([benchmark.queries[q] for q in qids], k=k)
    return {q: list(r.ids)[:k] for q, r in zip(qids, rankings, strict=True)}


def meteora_selections(
    benchmark: Any,
    qids: Sequence[str],
    *,
    generator: Any = None,
    rationales: Mapping[str, Sequence[str]] | None = None,
    retriever: Any = None,
    encoder: Any = None,
    scorer: Any = "default",
    candidates: int = 50,
    n_rationales: int | None = None,
    include_query: bool = True,
    settings: SelectorSettings | None = None,
    batch_size: int = 8,
    generation: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """The chunks METEORA selects for each query: :meth:`meteora.Reranker.search_batch`.

    Candidates are the hybrid top-``candidates`` per query; rationales come from
    ``rationales[qid]`` when given, else from ``generator.generate`` (one batched call,
    the generator's cache applies), else the query is the single rationale
    (query-only). ``scorer`` is the evidence scorer (``Reranker``'s ``scorer``; default
    the packaged one). The selector uses ``settings`` (default ``SelectorSettings()``). The dense retriever's stored corpus embeddings are reused, and
    with ``window > 0`` expansion reaches the candidates' whole abstracts, exactly as
    ``Reranker.search`` and the benchmark do.

    Returns:
        ``{qid: [passage_id, ...]}`` in the selector's ``order``.

    Example:
        >>> sel = meteora_selections(bench, bench.query_ids("test"), generator=gen, retriever=r)  # doctest: +SKIP
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise InvalidInputError(f"candidates must be a positive integer, got {candidates!r}")
    qids = list(qids)
    reranker, retriever = _reranker(
        benchmark,
        retriever,
        encoder,
        generator=generator if rationales is None else None,
        scorer=scorer,
        settings=settings,
        n_rationales=n_rationales,
        include_query=include_query,
        batch_size=batch_size,
        generation=dict(generation or {}),
    )
    if not qids:
        return {}
    queries = [benchmark.queries[q] for q in qids]
    given = None
    if rationales is not None:
        missing = [q for q in qids if q not in rationales]
        if missing:
            raise InvalidInputError(
                f"rationales has no entry for {len(missing)} queries, e.g. {missing[:3]}"
            )
        given = [list(rationales[q]) for q in qids]
    results = reranker.search_batch(queries, retriever, k=candidates, rationales=given)
    return {qid: list(res.selected_ids) for qid, res in zip(qids, results, strict=True)}
