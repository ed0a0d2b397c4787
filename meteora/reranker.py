"""The one object users import: :class:`Reranker`.

``Reranker`` runs METEORA's stages on a query and its candidate passages:

1. a :class:`~meteora.rationales.RationaleGenerator` writes rationales (or, with
   ``generator=None``, the query itself is the only rationale);
2. an :class:`~meteora.selection.EvidenceSelector` decides how many candidates to keep
   and ranks them all: by default the **learned cut**
   (:mod:`meteora.selection.learned_cut`): a small LightGBM model reads each
   candidate's standing in the list (its cosine to the query and to the rationales, a
   BM25 over the candidates, its document's standing), asks the
   :class:`~meteora.scorer.EvidenceScorer` (a small trained cross-encoder) about its
   top 10 only, and gives P(relevant); the top ``k`` with the best expected F1 is
   selected. ``SelectorSettings(cut="band")`` / ``"elbow"`` run the previous cuts;
3. neighbours are added (``window``);
4. a verifier stage: by default the poison defence
   (:class:`~meteora.pool_defence.PoolDefence`), which sees the candidate pool, drops
   suspicious added documents, re-selects without them through the same cut and reports
   conflicting findings (``result.conflicts``); any other verifier, or none, can replace it.

Scores: ``result.ranked`` holds every candidate. With the learned cut (the default) a
hit's score is P(relevant): a calibrated probability (trained with a logistic loss on
train-side questions), comparable across queries and thresholdable. With
``cut="band"`` it is on the cosine scale (the document's best cosine to the pooled
rationale minus a weighted evidence gap); with ``cut="elbow"`` the larger of its cosine
to the pooled rationale and to the rationale that picked it.

Build one from built objects or names (``Reranker(generator, encoder, scorer, settings,
verifier, top_k)``); :meth:`Reranker.from_pretrained` and :meth:`Reranker.from_preset`
turn names into models with loading options (adapter, template, 4-bit, device, cache).

Example:
    >>> from meteora import Reranker
    >>> rr = Reranker(generator=None)  # query-only, no LM  # doctest: +SKIP
    >>> res = rr.rerank("Does aspirin prevent stroke?", ["Aspirin cut strokes by 20%.", "Dogs bark."])  # doctest: +SKIP
    >>> res.selected[0].text  # doctest: +SKIP
    'Aspirin cut strokes by 20%.'

Research software, not medical advice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora._checks import check_generate_signature, check_generated, check_generation_options
from meteora.errors import InvalidInputError
from meteora.pipeline import CandidatePool, retrieve_pools
from meteora.protocols import CalibratedScoring
from meteora.rerank_result import RankedDocument, RerankResult, ranked_documents
from meteora.reranker_async import AsyncReranking
from meteora.reranker_loading import RerankerLoading
from meteora.selection.learned_cut import LearnedCut, pipeline_cut
from meteora.selection.selector import EvidenceSelector
from meteora.selection.selector_settings import SelectorSettings
from meteora.selection_inputs import (
    PreparedPool,
    candidate_pools,
    check_pools,
    encode_rationales,
    evidence_logits,
    given_rationales,
    pool_embeddings,
    query_vectors,
)
from meteora.types import Passage, PassageLike, check_queries, check_query, to_passages
from meteora.verifier_stage import DEFAULT_VERIFIER, build_verifiers, pool_view, verify_selection

__all__ = ["Reranker"]

logger = logging.getLogger(__name__)

class Reranker(RerankerLoading, AsyncReranking):
    """METEORA reranker: rationales → evidence selection (the learned cut) → optional verification.

    Each collaborator is a built object or a name (names load with the defaults of
    :meth:`from_pretrained`, which also takes loading options).

    Args:
        generator: ``"default"`` (the offline SmolLM2 default), a model hub id, folder
            or GGUF file, a built :class:`~meteora.rationales.generator.RationaleGenerator`
            (anything with ``generate(queries, n=, batch_size=, include_query=)``), or
            ``None`` for query-only mode (no LM; the query is the single rationale).
        encoder: an :class:`~meteora.embeddings.encoder.Encoder`, a model name/folder, or
            ``None`` for the packaged all-MiniLM-L6-v2.
        scorer: the evidence scorer (:class:`~meteora.scorer.EvidenceScorer`, a small
            cross-encoder that tells which chunk of a document holds the finding):
            ``"default"`` (the packaged adapter trained on PubMedQA train questions), a
            folder written by ``meteora train scorer``, a built scorer (anything with
            ``evidence_logits(queries, passage_lists)``), or ``None``. The learned cut
            asks it about stage 1's top 10 candidates only (without a scorer the
            learned cut's stage-1 model decides alone); the band reads the passages
            whose document has several candidates.
        settings: the selector's
            :class:`~meteora.selection.selector_settings.SelectorSettings` (default
            ``SelectorSettings()``: the learned cut, window 0). The learned cut reads the
            rationales of the generator its model was trained with (the offline SmolLM2
            default, with the query as anchor); for any other generator it runs its
            query-only model.
        verifier: ``"default"`` (the poison defence,
            :class:`~meteora.pool_defence.PoolDefence`: drops suspicious added documents,
            re-selects without them, reports conflicts; off with ``scorer=None``),
            ``None``/``False`` (off), ``True`` (an LLM verifier on the generator's model),
            a :class:`~meteora.verifier.Verifier`, a pool verifier (``verify_pool(view)``),
            any callable ``(query, passage, accepted_so_far) -> Verdict``, or a list of
            these (see :mod:`meteora.verifier_stage`).
        top_k: keep at most this many selected passages (``None``: all selected).
        n_rationales: rationales to ask for (``None``: the template's default).
        include_query: keep the query itself as an anchor rationale next to the
            generated ones (makes a weak generator safe).
        batch_size: queries per generation batch.
        generation: extra keyword arguments for ``generator.generate`` (``do_sample``,
            ``temperature``, ``seed``, ``max_new_tokens``).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) for the collaborators
            given by name: the encoder, the scorer and the generator (a generator that
            runs on llama.cpp or a server keeps its own: ``"cpu"`` leaves the offline
            default on llama.cpp, a GPU device moves it to transformers). ``None``: each
            picks CUDA when available, else CPU. Built objects are used as they are.
        cut: the cut stage instead of ``settings.cut``'s: a folder written by ``meteora
            train cut`` (its learned models) or any :class:`~meteora.selection.cuts.Cut`.

    The cross-encoder-style :meth:`rank` returns every document best first with its
    score and index; :meth:`arank`, :meth:`arerank` and :meth:`arerank_batch` are the
    async forms (the LM call awaits the backend's async path, the CPU stages run in a
    worker thread, so an event loop keeps serving).

    Example:
        >>> from meteora.selection.selector_settings import SelectorSettings
        >>> rr = Reranker(None, settings=SelectorSettings(window=1), device="cpu")  # doctest: +SKIP
        >>> rr.rank("Does aspirin prevent stroke?", ["Dogs bark.", "Aspirin cut strokes."])[0].index  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        generator: Any = "default",
        encoder: Any = None,
        scorer: Any = "default",
        settings: SelectorSettings | None = None,
        verifier: Any = DEFAULT_VERIFIER,
        top_k: int | None = None,
        *,
        n_rationales: int | None = None,
        include_query: bool = True,
        batch_size: int = 8,
        generation: dict[str, Any] | None = None,
        device: str | None = None,
        cut: Any = None,
    ) -> None:
        if device is not None and not isinstance(device, str):
            raise InvalidInputError(f"device must be a string such as 'cpu' or 'cuda', or None; got {device!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer or None, got {top_k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if n_rationales is not None and (isinstance(n_rationales, bool) or not isinstance(n_rationales, int) or n_rationales < 1):
            raise InvalidInputError(f"n_rationales must be a positive integer or None, got {n_rationales!r}")
        if settings is None:
            settings = SelectorSettings()
        elif not isinstance(settings, SelectorSettings):
            raise InvalidInputError(
                f"settings must be a meteora.SelectorSettings, got {type(settings).__name__}; "
                "build one with SelectorSettings(window=..., tau=...)"
            )
        self.settings = settings
        self.device = device
        #: serialises the use of this reranker's models across threads: the async methods'
        #: worker threads and the framework integrations hold it while they run
        self.lock = threading.Lock()
        self.scorer = self._load_scorer(scorer, device=device)
        self.encoder = self._load_encoder(encoder, device=device)
        self.generator = self._load_generator(generator, device=device)
        calibration = self.scorer.calibration if isinstance(self.scorer, CalibratedScoring) else None
        self.selector = EvidenceSelector(
            settings, calibrated=calibration, cut=pipeline_cut(cut, settings, self.generator, include_query=include_query)
        )
        self.n_rationales = n_rationales
        self.include_query = include_query
        self.top_k = top_k
        self.batch_size = batch_size
        self.generation = check_generation_options(generation)
        if self.generator is not None:
            check_generate_signature(self.generator, self.generation)
        self._warned_unread_rationales = False
        self._stages = build_verifiers(verifier, generator=self.generator, scorer=self.scorer)
        #: the verifier stage: ``None`` (off), one verifier, or a tuple of them (pool verifiers first)
        self.verifier = None if not self._stages else self._stages[0] if len(self._stages) == 1 else tuple(self._stages)

    # ------------------------------------------------------------ running
    def rationales_for(self, queries: Sequence[str]) -> list[tuple[list[str], Any]]:
        """Rationales (and the generator's full output) for each query, in one batched call."""
        if self.generator is None:
            return [([q], None) for q in queries]
        if not queries:
            return []
        sets = self.generator.generate(
            list(queries),
            n=self.n_rationales,
            batch_size=self.batch_size,
            include_query=self.include_query,
            **self.generation,
        )
        return check_generated(queries, sets, type(self.generator).__name__)

    def _finish(self, prepared: PreparedPool) -> RerankResult:
        """Select in one prepared pool, verify the selection (the pool verifiers see the
        whole pool and may re-select through the same cut), cap it at ``top_k``."""
        pool, rationales, rset = prepared.pool, prepared.rationales, prepared.rationale_set
        query = pool.query
        selection = self.selector.select_signals(prepared.signals, context=pool.context, rationales=rationales)

        def view() -> Any:
            return pool_view(pool, selection, prepared.signals, selector=self.selector, scorer=self.scorer,
                             rationales=rationales)

        selected, verification = verify_selection(
            self._stages, query, selection, flags=getattr(rset, "flags", None), view=view
        )
        if self.top_k is not None:
            selected = selected[: self.top_k]
        return RerankResult(query, selected, selection.ranking, rationales, rset, selection, verification)

    def rerank(
        self,
        query: str,
        passages: Sequence[PassageLike],
        *,
        ids: Sequence[str] | None = None,
        passage_embeddings: np.ndarray | None = None,
        context: Sequence[Passage] | None = None,
    ) -> RerankResult:
        """Select the evidence for one query among ``passages``.

        Args:
            query: the question.
            passages: candidates as ``str``, ``dict`` or :class:`~meteora.types.Passage`.
            ids: optional ids, one per passage.
            passage_embeddings: precomputed embeddings of ``passages`` from the same
                encoder (skips encoding; e.g. ``DenseRetriever.embeddings_for(ids)``).
            context: optional other chunks of the candidates' documents that expansion
                may add (never scored); :meth:`search` passes the retriever's.
        """
        check_query(query)
        return self.rerank_batch([query], [passages], ids=[ids] if ids is not None else None,
                                 passage_embeddings=[passage_embeddings] if passage_embeddings is not None else None,
                                 contexts=[context] if context is not None else None)[0]

    def rerank_batch(
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
        """:meth:`rerank` for many queries, with one batched generation for all of them.

        Args:
            queries: the questions.
            candidate_lists: one non-empty list of candidates per query.
            ids, passage_embeddings, contexts: per query (or ``None``), as in :meth:`rerank`.
            rationales: per query, rationale texts or a
                :class:`~meteora.rationales.RationaleSet` to use instead of the
                generator's (an empty list means the query alone).
            query_embeddings: per query, its embedding from this reranker's encoder (or
                ``None``); a rationale identical to the query reuses it instead of
                being encoded again.

        Example:
            >>> rr.rerank_batch(["q1", "q2"], [["a", "b"], ["c"]], rationales=[["a"], ["c"]])  # doctest: +SKIP
        """
        pools = candidate_pools(
            self.encoder, queries, candidate_lists, ids=ids, passage_embeddings=passage_embeddings,
            contexts=contexts, query_embeddings=query_embeddings,
        )
        return self.rerank_pools(pools, rationales=rationales)

    def rerank_pools(self, pools: Sequence[CandidatePool], *, rationales: Sequence[Any] | None = None) -> list[RerankResult]:
        """Select evidence in prepared :class:`~meteora.pipeline.CandidatePool` objects:
        :meth:`prepare_pools`, then selection and verification per pool.

        The one implementation behind :meth:`rerank_batch` and :meth:`search_batch`. A
        pool without candidates gives an empty result (nothing ranked or selected; the
        query stands in as the rationale and no rationales are generated for it).

        Example:
            >>> pools = rr.retrieve(["Does aspirin prevent stroke?"], retriever, k=20)  # doctest: +SKIP
            >>> rr.rerank_pools(pools)[0].selected_ids  # doctest: +SKIP
        """
        pools, live = self._check_pools(pools, rationales)
        return self._select_pools(pools, live, self._resolve_rationales(pools, live, rationales))

    def prepare_pools(self, pools: Sequence[CandidatePool], *, rationales: Sequence[Any] | None = None) -> list[PreparedPool]:
        """Everything the selector reads, for every pool, in batches: rationales (given,
        or one batched generation), one batched encode of the rationales (and of the
        passages without stored embeddings), the signal tables, then one batched scorer
        call for the candidates each pool's cut wants read (the learned cut: stage 1's
        top 10; NaN for the others).

        Example:
            >>> prepared = rr.prepare_pools(rr.retrieve(["Does aspirin prevent stroke?"], retriever))  # doctest: +SKIP
            >>> prepared[0].signals.evidence  # doctest: +SKIP
        """
        pools, live = self._check_pools(pools, rationales)
        return self._prepare(pools, live, self._resolve_rationales(pools, live, rationales))

    @staticmethod
    def _check_pools(pools: Sequence[CandidatePool], rationales: Sequence[Any] | None) -> tuple[list[CandidatePool], list[int]]:
        """The pools as a list (each checked) and the indices of those with candidates."""
        pools = check_pools(pools, rationales)
        live = [i for i, p in enumerate(pools) if p.passages]
        if len(live) < len(pools):
            logger.warning("%d of %d queries have no candidates; their results are empty", len(pools) - len(live), len(pools))
        return pools, live

    def _resolve_rationales(
        self, pools: list[CandidatePool], live: list[int], rationales: Sequence[Any] | None
    ) -> list[tuple[list[str], Any]]:
        """The rationales of the pools with candidates: given, or one batched generation."""
        live_queries = [pools[i].query for i in live]
        if rationales is None:
            return self.rationales_for(live_queries)
        cut = self.selector.cut
        unread = isinstance(cut, LearnedCut) and not (cut.reads_rationales and self.scorer is not None)
        if unread and not self._warned_unread_rationales:  # once per reranker: a batch loop would repeat it
            self._warned_unread_rationales = True
            logger.warning(
                "the learned cut's %s model does not read rationales: the given ones are recorded in the "
                "results but select nothing; to select by them use SelectorSettings(cut='band') or "
                "cut='elbow', or the generator the learned cut was trained with",
                cut.final if self.scorer is not None else "stage-1",
            )
        return given_rationales(live_queries, [rationales[i] for i in live])

    def _select_pools(
        self, pools: list[CandidatePool], live: list[int], resolved: list[tuple[list[str], Any]]
    ) -> list[RerankResult]:
        """Everything after the rationales (:meth:`_prepare`), then selection and
        verification per pool."""
        return [self._finish(p) for p in self._prepare(pools, live, resolved)]

    def _prepare(
        self, pools: list[CandidatePool], live: list[int], resolved: list[tuple[list[str], Any]]
    ) -> list[PreparedPool]:
        """One batched encode of the rationales, one of the passages without stored
        embeddings, the signal tables, then one batched scorer call."""
        queries = [p.query for p in pools]
        rats: list[tuple[list[str], Any]] = [([q], None) for q in queries]
        for i, r in zip(live, resolved, strict=True):
            rats[i] = r
        rat_embs = encode_rationales(self.encoder, queries, rats, [p.query_embedding for p in pools])
        qembs = query_vectors(self.encoder, queries, rats, rat_embs, [p.query_embedding for p in pools])
        pembs = pool_embeddings(self.encoder, pools, rat_embs[0].shape[1] if rat_embs else 1)
        signals = [
            self.selector.signals(
                rat_embs[i], pembs[i], pool.passages, rationales=rats[i][0], query=pool.query,
                query_embedding=qembs[i], retrieval=pool.ranking,
            )
            for i, pool in enumerate(pools)
        ]
        if self.scorer is not None:
            wanted = [self.selector.evidence_wanted(sig) for sig in signals]
            evidence = evidence_logits(self.scorer, queries, [p.passages for p in pools], wanted)
            signals = [sig.with_evidence(ev) for sig, ev in zip(signals, evidence, strict=True)]
        return [PreparedPool(pool, rats[i][0], rats[i][1], signals[i]) for i, pool in enumerate(pools)]

    # ------------------------------------------------------------ the cross-encoder view
    def rank(
        self, query: str, documents: Sequence[PassageLike], top_k: int | None = None, return_documents: bool = True
    ) -> list[RankedDocument]:
        """Every document ranked for ``query``, best first, as cross-encoder rerankers do.

        Each entry is a :class:`~meteora.rerank_result.RankedDocument`: ``index`` (into
        ``documents``), ``score`` (METEORA's, cosine scale), ``relevance_score`` (in
        [0, 1]), ``rank``, ``selected`` (in METEORA's evidence set, :meth:`rerank`),
        ``id`` and, with ``return_documents``, the ``document`` text. ``top_k`` keeps
        the first ``k`` entries (``None``: all); it does not change which are selected.

        Example:
            >>> rr.rank("Does aspirin prevent stroke?", ["Dogs bark.", "Aspirin cut strokes."], top_k=1)  # doctest: +SKIP
            [RankedDocument(index=1, score=0.61, relevance_score=0.805, rank=1, selected=True, id='1', document='Aspirin cut strokes.')]
        """
        passages = to_passages(documents)
        return ranked_documents(self.rerank(query, passages), passages, top_k=top_k, return_documents=return_documents)

    def retrieve(self, queries: Sequence[str], retriever: Any, k: int = 50) -> list[CandidatePool]:
        """The top-``k`` candidates of every query, in one batched retriever call.

        Stored corpus embeddings of a dense retriever (or a hybrid's dense member) with
        this reranker's encoder are reused; document context is attached when
        ``settings.window > 0`` and ``settings.expand_from_documents`` (see
        :func:`meteora.pipeline.retrieve_pools`).
        """
        return retrieve_pools(queries, retriever, k=k, encoder=self.encoder, settings=self.settings)

    def search_batch(
        self, queries: Sequence[str], retriever: Any, k: int = 50, *, rationales: Sequence[Any] | None = None
    ) -> list[RerankResult]:
        """Retrieve ``k`` candidates per query with ``retriever``, then select among them.

        One batched retriever call for all queries, then :meth:`rerank_pools` (one
        batched generation, one batched encode). The dense retriever's stored corpus
        embeddings are reused when its encoder is this reranker's encoder, and a plain
        dense retriever's query embeddings too (the query is encoded once). With
        ``window > 0`` and ``settings.expand_from_documents``, expansion may add the
        neighbours of a selected chunk from its whole document in the retriever's corpus.
        ``rationales`` (per query: texts or a RationaleSet) skips the generator.

        Example:
            >>> rr = Reranker(generator=None, encoder=retriever.encoder)  # doctest: +SKIP
            >>> [r.selected_ids for r in rr.search_batch(["fever in children?", "statins?"], retriever, k=20)]  # doctest: +SKIP
        """
        queries = check_queries(queries)
        return self.rerank_pools(self.retrieve(queries, retriever, k), rationales=rationales)

    def search(self, query: str, retriever: Any, k: int = 50) -> RerankResult:
        """Retrieve ``k`` candidates with ``retriever``, then select among them
        (``search_batch([query], retriever, k)[0]``).

        Raises:
            InvalidInputError: the retriever found no candidates.
        """
        check_query(query)
        result = self.search_batch([query], retriever, k)[0]
        if not len(result.ranked):
            raise InvalidInputError(f"the retriever found no candidates for {query!r}; nothing to select from")
        return result

    def __repr__(self) -> str:
        gen = "query-only" if self.generator is None else repr(self.generator)
        return (
            f"Reranker(generator={gen}, encoder={self.encoder!r}, scorer={self.scorer!r}, selector={self.selector!r}, "
            f"verifier={self.verifier is not None})"
        )

