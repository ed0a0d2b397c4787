"""The shapes of the reranker's collaborators, as small :class:`typing.Protocol` classes.

A :class:`~meteora.Reranker` works with anything of the right shape — the classes meteora
ships or your own — and checks each collaborator once, when it is built, instead of
probing attributes while it runs:

* :class:`RationaleSource` writes rationales (:class:`~meteora.rationales.generator.RationaleGenerator`),
  one :class:`RationaleOutput` per query;
* :class:`EvidenceScoring` gives evidence logits (:class:`~meteora.scorer.EvidenceScorer`),
  :class:`CalibratedScoring` also the selector knobs it was calibrated with;
* :class:`PassageRetriever` finds candidates (BM25, dense, hybrid retrievers);
* :class:`EmbeddingStore` is a retriever that also holds its corpus embeddings from an
  encoder (the dense retriever), so the reranker reuses them instead of encoding again;
* :class:`MemberRetrievers` is a retriever fused from members (the hybrid), one of which
  may be an embedding store.

Example:
    >>> class Keywords:
    ...     def evidence_logits(self, queries, passage_lists):
    ...         return [[float("aspirin" in p) for p in ps] for ps in passage_lists]
    >>> isinstance(Keywords(), EvidenceScoring), isinstance(object(), EvidenceScoring)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from meteora.types import Ranking

__all__ = [
    "GENERATION_OPTIONS",
    "RationaleSource",
    "RationaleOutput",
    "EvidenceScoring",
    "CalibratedScoring",
    "PassageRetriever",
    "EmbeddingStore",
    "MemberRetrievers",
]

#: The keywords a :class:`RationaleSource`'s ``generate`` takes besides ``n``,
#: ``batch_size`` and ``include_query`` (what a Reranker's ``generation=`` may set).
GENERATION_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "filter", "show_progress")


@runtime_checkable
class RationaleSource(Protocol):
    """Writes rationales for queries.

    ``generate(queries, n, batch_size=, include_query=, **options)`` returns one object
    per query, in order, with ``query`` (the query it answers) and ``rationales`` (a
    list of non-empty strings); ``options`` are among :data:`GENERATION_OPTIONS` (only
    the ones a caller passes reach it).
    """

    def generate(
        self, queries: Sequence[str], n: int | None = None, *, batch_size: int = 8, include_query: bool = False,
        **options: Any,
    ) -> Any: ...


@runtime_checkable
class RationaleOutput(Protocol):
    """What a :class:`RationaleSource` returns per query
    (:class:`~meteora.rationales.rationale_set.RationaleSet`, or any object with these)."""

    query: str
    rationales: Sequence[str]


@runtime_checkable
class EvidenceScoring(Protocol):
    """Evidence logits: for each query, one logit per passage text (only differences
    between the passages of one document are used)."""

    def evidence_logits(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> Sequence[Any]: ...


@runtime_checkable
class CalibratedScoring(EvidenceScoring, Protocol):
    """An evidence scorer that records the selector knobs it was calibrated with
    (``{"evidence_weight": w, "evidence_band": b}``, possibly empty)."""

    calibration: Mapping[str, float]


@runtime_checkable
class PassageRetriever(Protocol):
    """Finds candidates: one :class:`~meteora.types.Ranking` per query, best first."""

    def search(self, queries: Sequence[str], k: int = 10) -> Any: ...


@runtime_checkable
class EmbeddingStore(Protocol):
    """A retriever that holds its corpus's embeddings from ``encoder``."""

    encoder: Any

    def embeddings_for(self, ids: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray: ...

    def search_embeddings(self, query_embeddings: np.ndarray, k: int = 10, *, queries: Any = None) -> list[Ranking]: ...


@runtime_checkable
class MemberRetrievers(Protocol):
    """A retriever fused from member retrievers (the hybrid)."""

    @property
    def retrievers(self) -> list[Any]: ...
