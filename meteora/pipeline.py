"""The one selection pipeline's building blocks: candidate pools and their retrieval.

Every caller that selects evidence — :class:`~meteora.Reranker` (``rerank``,
``search``), the benchmark's ``meteora*`` methods, the QA evaluation's ``meteora``
conditions and the DPO preference builder — goes through :class:`~meteora.Reranker`,
which uses what this module defines:

* :class:`CandidatePool`: one query's candidates, with the retriever's stored
  embeddings and the document context expansion may add;
* :func:`retrieve_pools`: candidates for many queries in one batched retriever call.

The selector knobs, :class:`~meteora.selection.selector_settings.SelectorSettings`, live
with the selector in :mod:`meteora.selection`.

The path of a query: ``Reranker.search_batch`` → :func:`retrieve_pools` → rationales
(one batched generation) → one batched encode → ``EvidenceSelector.select`` → verifier.

Example:
    >>> from meteora.types import to_passages
    >>> pool = CandidatePool("fever?", to_passages(["fever", "cats"]))
    >>> len(pool), pool.embeddings is None
    (2, True)
    >>> SelectorSettings(window=1).uses_context
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.protocols import EmbeddingStore, MemberRetrievers, PassageRetriever
from meteora.selection.selector_settings import SelectorSettings
from meteora.types import Passage, Ranking, check_queries

__all__ = [
    "CandidatePool",
    "retrieve_pools",
    "dense_member",
    "stored_embeddings",
    "document_context",
    "document_sizes",
]

logger = logging.getLogger(__name__)


@dataclass
class CandidatePool:
    """One query's candidates, as the selector consumes them.

    Attributes:
        query: the query.
        passages: the candidates, best first by the retriever.
        embeddings: their stored ``(len(passages), d)`` embeddings from the reranker's
            encoder, or ``None`` (then the reranker encodes them).
        context: other chunks of the candidates' documents that expansion may add
            (never scored), or ``None``.
        query_embedding: the query's embedding from the reranker's encoder when the
            retriever computed it (so the query is encoded once), or ``None``.
        ranking: the retriever's ranking (``None`` for caller-given candidates).
        doc_sizes: chunks per candidate document in the retriever's corpus (``None``
            for caller-given candidates); the poison defence's guard reads it.
    """

    query: str
    passages: list[Passage]
    embeddings: np.ndarray | None = None
    context: list[Passage] | None = None
    query_embedding: np.ndarray | None = None
    ranking: Ranking | None = None
    doc_sizes: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.passages)


def dense_member(retriever: Any, encoder: Any = None) -> EmbeddingStore | None:
    """The retriever itself or a hybrid's member that stores its corpus embeddings
    (:class:`~meteora.protocols.EmbeddingStore`), with ``encoder`` when given.

    Example:
        >>> dense_member(object()) is None
        True
    """
    members = retriever.retrievers if isinstance(retriever, MemberRetrievers) else []
    for r in [retriever, *members]:
        if isinstance(r, EmbeddingStore) and (encoder is None or r.encoder is encoder):
            return r
    return None


def stored_embeddings(retriever: Any, encoder: Any, ids: Sequence[str]) -> np.ndarray | None:
    """Corpus embeddings a dense retriever (or one inside a hybrid) with ``encoder`` holds."""
    dense = dense_member(retriever, encoder)
    return None if dense is None else dense.embeddings_for(list(ids))


def document_context(retriever: Any, passages: Sequence[Passage], window: int) -> list[Passage] | None:
    """The chunks of the candidates' documents within ``window`` positions of a
    candidate, from the retriever's passage store (``retriever.neighbours``), or
    ``None`` for a retriever that cannot look chunks up by document.

    Example:
        >>> from meteora.retrievers.bm25 import BM25Retriever
        >>> r = BM25Retriever(backend="numpy").index(
        ...     [{"id": f"d-{i}", "doc_id": "d", "position": i, "text": f"chunk {i}"} for i in range(4)])
        >>> [p.id for p in document_context(r, [r.get_passage("d-0")], 1)]
        ['d-0', 'd-1']
    """
    neighbours = getattr(retriever, "neighbours", None)
    if not callable(neighbours) or not passages:
        return None
    return neighbours(list(passages), window)


def document_sizes(retriever: Any, passages: Sequence[Passage]) -> dict[str, int] | None:
    """How many chunks each of the candidates' documents has in the retriever's corpus,
    counted in its passage store (``retriever.document_sizes``; at least 1: the candidate
    itself), or ``None`` for a retriever that cannot count them.

    Example:
        >>> document_sizes(object(), []) is None
        True
    """
    sizes = getattr(retriever, "document_sizes", None)
    if not callable(sizes) or not passages:
        return None
    counts = sizes([p.doc_id for p in passages])
    return {p.doc_id: max(1, int(counts.get(p.doc_id, 0))) for p in passages}


def retrieve_pools(
    queries: Sequence[str], retriever: Any, *, k: int, encoder: Any, settings: SelectorSettings
) -> list[CandidatePool]:
    """Candidates of every query from one batched retriever call.

    Reuses the dense retriever's stored corpus embeddings when its encoder is
    ``encoder``; a plain dense retriever with that encoder also hands over the query
    embeddings it searched with (a hybrid encodes its queries inside its dense member,
    so there the reranker encodes the query once more). Document context is attached
    when ``settings.window > 0`` and ``settings.expand_from_documents``.

    Example:
        >>> pools = retrieve_pools(["fever?"], dense, k=5, encoder=dense.encoder, settings=SelectorSettings())  # doctest: +SKIP
    """
    queries = check_queries(queries)
    if not isinstance(retriever, PassageRetriever):
        raise InvalidInputError(
            f"retriever must be a meteora retriever (BM25Retriever, DenseRetriever, HybridRetriever or one "
            f"loaded with load_retriever), got {type(retriever).__name__}"
        )
    if not queries:
        return []
    qemb: np.ndarray | None = None
    if isinstance(retriever, EmbeddingStore) and retriever.encoder is encoder:
        from meteora.retrievers.base import check_k

        check_k(k)
        qemb = retriever.encode_queries(queries)
        rankings = retriever.search_embeddings(qemb, k=k, queries=queries)
    else:
        rankings = retriever.search(list(queries), k=k)
    if isinstance(rankings, (str, bytes)) or not isinstance(rankings, Sequence) or len(rankings) != len(queries):
        got = len(rankings) if isinstance(rankings, Sequence) else type(rankings).__name__
        raise InvalidInputError(f"the retriever returned {got} rankings for {len(queries)} queries")
    pools = []
    for i, (q, ranking) in enumerate(zip(queries, rankings, strict=True)):
        passages = list(ranking.passages)
        emb = stored_embeddings(retriever, encoder, [p.id for p in passages]) if passages else None
        context = document_context(retriever, passages, settings.window) if passages and settings.uses_context else None
        pools.append(
            CandidatePool(
                q, passages, emb, context, qemb[i] if qemb is not None else None, ranking,
                document_sizes(retriever, passages) if passages else None,
            )
        )
    return pools
