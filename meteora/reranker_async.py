"""The reranker's coroutines: :class:`AsyncReranking`, mixed into
:class:`~meteora.reranker.Reranker`.

:meth:`~AsyncReranking.arank`, :meth:`~AsyncReranking.arerank`,
:meth:`~AsyncReranking.arerank_batch` and :meth:`~AsyncReranking.arerank_pools` do what
their sync forms do without blocking the event loop: the rationale LM is awaited on the
generator's async path when it has one (``agenerate``; a
:class:`~meteora.rationales.generator.RationaleGenerator` on an OpenAI-compatible server
sends its requests from the loop), and everything that computes — encoding, the evidence
scorer, selection, verification, an in-process LM — runs in a worker thread
(:func:`asyncio.to_thread`) under the reranker's ``lock``.

Example:
    >>> import asyncio  # doctest: +SKIP
    >>> asyncio.run(rr.arank("Does aspirin prevent stroke?", ["Dogs bark.", "Aspirin cut strokes."]))[0].index  # doctest: +SKIP
    1
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora._checks import check_generated
from meteora.pipeline import CandidatePool
from meteora.rerank_result import RankedDocument, RerankResult, ranked_documents
from meteora.selection_inputs import candidate_pools, given_rationales
from meteora.types import Passage, PassageLike, check_query, to_passages

__all__ = ["AsyncReranking"]


class AsyncReranking:
    """The async methods of :class:`~meteora.reranker.Reranker` (they use its stages:
    ``_check_pools``, ``rationales_for``, ``_select_pools``)."""

    generator: Any
    encoder: Any
    lock: Any
    n_rationales: int | None
    batch_size: int
    include_query: bool
    generation: dict[str, Any]

    async def arank(
        self, query: str, documents: Sequence[PassageLike], top_k: int | None = None, return_documents: bool = True
    ) -> list[RankedDocument]:
        """:meth:`rank` without blocking the event loop (see :meth:`arerank_pools`).

        Example:
            >>> top = await rr.arank("Does aspirin prevent stroke?", docs, top_k=3)  # doctest: +SKIP
        """
        passages = to_passages(documents)
        result = await self.arerank(query, passages)
        return ranked_documents(result, passages, top_k=top_k, return_documents=return_documents)

    async def arerank(
        self,
        query: str,
        passages: Sequence[PassageLike],
        *,
        ids: Sequence[str] | None = None,
        passage_embeddings: np.ndarray | None = None,
        context: Sequence[Passage] | None = None,
    ) -> RerankResult:
        """:meth:`rerank` without blocking the event loop (see :meth:`arerank_pools`).

        Example:
            >>> res = await rr.arerank("Does aspirin prevent stroke?", docs)  # doctest: +SKIP
        """
        check_query(query)
        results = await self.arerank_batch(
            [query], [passages], ids=[ids] if ids is not None else None,
            passage_embeddings=[passage_embeddings] if passage_embeddings is not None else None,
            contexts=[context] if context is not None else None,
        )
        return results[0]

    async def arerank_batch(
        self,
        queries: Sequence[str],
        candidate_lists: Sequence[Sequence[PassageLike]],
        *,
        ids: Sequence[Sequence[str] | None] | None = None,
        passage_embeddings: Sequence[np.ndarray | None] | None = None,
        rationales: Sequence[Any] | None = None,
        contexts: Sequence[Sequence[Passage] | None] | None = None,
        query_embeddings: Sequence[np.ndarray | None] | None = None,
    ) -> list[RerankResult]:
        """:meth:`rerank_batch` without blocking the event loop (see :meth:`arerank_pools`)."""
        pools = await asyncio.to_thread(
            candidate_pools, self.encoder, queries, candidate_lists, ids=ids, passage_embeddings=passage_embeddings,
            contexts=contexts, query_embeddings=query_embeddings,
        )
        return await self.arerank_pools(pools, rationales=rationales)

    async def arerank_pools(self, pools: Sequence[CandidatePool], *, rationales: Sequence[Any] | None = None) -> list[RerankResult]:
        """:meth:`rerank_pools` as a coroutine that never blocks the event loop.

        The rationale LM is awaited on the generator's async path when it has one
        (``agenerate``: a :class:`~meteora.rationales.generator.RationaleGenerator` on an
        OpenAI-compatible server sends its requests from the loop); a generator without
        one runs in a worker thread. Encoding, scoring, selection and verification run
        in a worker thread (:func:`asyncio.to_thread`), under :attr:`lock`, so concurrent
        calls share the models one at a time while the loop keeps serving.
        """
        pools, live = self._check_pools(pools, rationales)
        live_queries = [pools[i].query for i in live]
        if rationales is not None:
            resolved = given_rationales(live_queries, [rationales[i] for i in live])
        else:
            resolved = await self.arationales_for(live_queries)
        return await asyncio.to_thread(self._locked, self._select_pools, pools, live, resolved)

    async def arationales_for(self, queries: Sequence[str]) -> list[tuple[list[str], Any]]:
        """:meth:`rationales_for` as a coroutine (the generator's ``agenerate`` when it has
        one, else ``generate`` in a worker thread)."""
        if self.generator is None or not queries:
            return self.rationales_for(queries)
        agenerate = getattr(self.generator, "agenerate", None)
        if not inspect.iscoroutinefunction(agenerate):
            return await asyncio.to_thread(self._locked, self.rationales_for, queries)
        sets = await agenerate(
            list(queries), n=self.n_rationales, batch_size=self.batch_size, include_query=self.include_query,
            **self.generation,
        )
        return check_generated(queries, sets, type(self.generator).__name__)

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self.lock:
            return fn(*args)
