"""The one object users import: :class:`Reranker`.

``Reranker`` runs METEORA's three stages on a query and its candidate passages:

1. a :class:`~meteora.rationales.RationaleGenerator` writes rationales (or, with
   ``generator=None``, the query itself is the only rationale);
2. an :class:`~meteora.scorer.EvidenceScorer` (a small trained cross-encoder) tells,
   among the candidates of one document, which chunk holds the finding;
3. an :class:`~meteora.selection.EvidenceSelector` scores each chunk by its document's
   similarity to the rationales plus its evidence, keeps the chunks about as good as
   the best one (a calibrated band; never a chunk below the relevance floor), pairs
   rationales with chunks, and adds neighbours;
4. an optional verifier drops poisoned or contradictory passages.

Scores: ``result.ranked`` holds every candidate, on the cosine scale. With the scorer
(the default) a hit's score is its document's best cosine to the pooled rationale
minus a weighted evidence gap (0 for the chunk of its document that reads most like the
finding); with ``scorer=None`` it is the larger of its cosine to the pooled rationale
and to the rationale that picked it. Neither is min-max normalised, so thresholds carry
across queries.

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
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from meteora._checks import (
    check_callable_arity,
    check_generated,
    check_generation_options,
    is_blank,
    real_matrix,
)
from meteora.errors import InvalidInputError
from meteora.pipeline import CandidatePool, retrieve_pools
from meteora.rerank_result import RerankResult
from meteora.selection.selector_settings import SelectorSettings
from meteora.types import Passage, PassageLike, check_queries, check_query, to_passages

__all__ = ["Reranker"]

logger = logging.getLogger(__name__)

#: Largest passage accepted, in characters (longer ones are truncated for embedding
#: only; the passage itself is returned untouched).
MAX_EMBED_CHARS = 20_000


class Reranker:
    """METEORA reranker: rationales → evidence selection → optional verification.

    Args:
        generator: ``"default"`` (the offline SmolLM2 default), a model hub id or folder,
            a built :class:`~meteora.rationales.RationaleGenerator`, or ``None`` for
            query-only mode (no LM; the query is the single rationale).
        encoder: :class:`~meteora.embeddings.Encoder`, a model name/folder, or ``None``
            for the packaged all-MiniLM-L6-v2.
        scorer: the evidence scorer (:class:`~meteora.scorer.EvidenceScorer`, a small
            cross-encoder that tells which chunk of a document holds the finding):
            ``"default"`` (the packaged adapter trained on PubMedQA train questions), a
            folder written by ``meteora train scorer``, a built scorer (anything with
            ``evidence_logits(queries, passage_lists)``), or ``None`` for embeddings
            only (the untrained METEORA baseline). With a scorer a chunk is scored by
            its document's relevance plus its evidence, and the selection keeps the
            chunks within ``settings.evidence_band`` of the best (see
            :mod:`meteora.selection`). It only reads passages whose document has
            several candidates, so independent passages cost nothing extra.
        n_rationales: rationales to ask for (``None``: the template's default).
        include_query: keep the query itself as an anchor rationale next to the
            generated ones (makes a weak generator safe).
        template: prompt template name or object (when ``generator`` is a name).
        settings: the selector's :class:`~meteora.selection.selector_settings.SelectorSettings` (default
            ``SelectorSettings()``: distinct pairing, tau 1.0, window 0).
        pairing, tau, window, use_pairing, use_pooling, order, min_similarity: shorthands
            for the fields of ``settings``; a value given here
            replaces that field (``Reranker(window=1)`` is
            ``Reranker(settings=SelectorSettings(window=1))``; ``min_similarity=None``
            turns that floor off).
        verifier: ``None``/``False`` (off), ``True`` (an LLM verifier on the generator's
            model), a :class:`~meteora.verifier.Verifier`, or any callable
            ``(query, passage, accepted_so_far) -> Verdict``.
        top_k: keep at most this many selected passages (``None``: all selected).
        batch_size: queries per generation batch.
        generation: extra keyword arguments for ``generator.generate`` (``do_sample``,
            ``temperature``, ``seed``, ``max_new_tokens``).
        load_in_4bit / adapter: passed to the generator when ``generator`` is a name.
        cache: rationale cache when ``generator`` is a name: ``True`` (default,
            ``$METEORA_HOME/rationales.sqlite``), a path, or ``None``/``False``.
    """

    def __init__(
        self,
        generator: Any = "default",
        encoder: Any = None,
        *,
        scorer: Any = "default",
        n_rationales: int | None = None,
        include_query: bool = True,
        template: Any = None,
        settings: SelectorSettings | None = None,
        pairing: str | None = None,
        tau: float | None = None,
        window: int | None = None,
        use_pairing: bool | None = None,
        use_pooling: bool | None = None,
        min_similarity: float | None | str = "settings",
        verifier: Any = None,
        order: str | None = None,
        top_k: int | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
        generation: dict[str, Any] | None = None,
        load_in_4bit: bool = False,
        adapter: str | None = None,
        cache: Any = True,
    ) -> None:
        from meteora.embeddings.encoder import Encoder
        from meteora.settings import apply_thread_setting

        apply_thread_setting(num_threads)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer or None, got {top_k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if n_rationales is not None and (isinstance(n_rationales, bool) or not isinstance(n_rationales, int) or n_rationales < 1):
            raise InvalidInputError(f"n_rationales must be a positive integer or None, got {n_rationales!r}")
        self.settings = _settings_from(
            settings,
            pairing=pairing, tau=tau, window=window, use_pairing=use_pairing, use_pooling=use_pooling, order=order,
            floors={} if min_similarity == "settings" else {"min_similarity": min_similarity},
        )
        self.scorer = self._build_scorer(scorer, num_threads=num_threads)
        self.selector = self.settings.selector(calibrated=getattr(self.scorer, "calibration", None))
        self.encoder = encoder if isinstance(encoder, Encoder) else Encoder(encoder, num_threads=num_threads)
        self.generator = self._build_generator(
            generator, template=template, load_in_4bit=load_in_4bit, adapter=adapter, cache=cache
        )
        self.n_rationales = n_rationales
        self.include_query = include_query
        self.top_k = top_k
        self.batch_size = batch_size
        self.generation = check_generation_options(generation, self.generator)
        self.verifier = self._build_verifier(verifier)

    # ------------------------------------------------------------ construction
    @staticmethod
    def _build_generator(generator: Any, *, template: Any, load_in_4bit: bool, adapter: str | None, cache: Any):
        if generator is None or generator is False:
            return None
        from meteora.rationales.generator import RationaleGenerator

        if isinstance(generator, RationaleGenerator) or hasattr(generator, "generate"):
            return generator
        if not isinstance(generator, (str, os.PathLike)):
            raise InvalidInputError(
                "generator must be 'default', a hub id or model folder, an object with generate(queries, ...), "
                f"or None (query-only); got {type(generator).__name__}"
            )
        name = None if generator == "default" else generator
        return RationaleGenerator.from_pretrained(
            name, adapter=adapter, template=template, load_in_4bit=load_in_4bit, cache=cache
        )

    @staticmethod
    def _build_scorer(scorer: Any, *, num_threads: int | None):
        if scorer is None or scorer is False:
            return None
        if hasattr(scorer, "evidence_logits"):
            return scorer
        if isinstance(scorer, (str, os.PathLike)):
            from meteora.scorer import EvidenceScorer

            return EvidenceScorer(scorer, num_threads=num_threads)
        raise InvalidInputError(
            "scorer must be 'default', a folder written by `meteora train scorer`, an object with "
            f"evidence_logits(queries, passage_lists), or None; got {type(scorer).__name__}"
        )

    def _evidence(self, queries: Sequence[str], pools: Sequence[Sequence[Passage]]) -> list[np.ndarray | None]:
        """The scorer's evidence logits for every pool (``None`` each without a scorer).

        Only passages that share their document with another candidate are read (the
        logit matters only relative to the rest of its document); the others get 0.
        One batched call for every pool.
        """
        if self.scorer is None:
            return [None] * len(pools)
        wanted: list[list[int]] = []
        for pool in pools:
            counts: dict[str, int] = {}
            for p in pool:
                counts[p.doc_id] = counts.get(p.doc_id, 0) + 1
            wanted.append([i for i, p in enumerate(pool) if counts[p.doc_id] > 1])
        live = [k for k, w in enumerate(wanted) if w]
        logits = (
            self.scorer.evidence_logits(
                [queries[k] for k in live], [[pools[k][i].text for i in wanted[k]] for k in live]
            )
            if live
            else []
        )
        if isinstance(logits, (str, bytes, Mapping)) or not hasattr(logits, "__len__") or len(logits) != len(live):
            got = len(logits) if hasattr(logits, "__len__") else type(logits).__name__
            raise InvalidInputError(
                f"the scorer ({type(self.scorer).__name__}) returned {got} logit lists for {len(live)} queries; "
                "evidence_logits must return one list of logits per query"
            )
        out: list[np.ndarray | None] = [np.zeros(len(pool)) for pool in pools]
        for k, lg in zip(live, logits, strict=True):
            arr = real_matrix(lg, f"the scorer's evidence logits for query #{k}", ndim=1)
            if arr.shape[0] != len(wanted[k]):
                raise InvalidInputError(f"the scorer returned {arr.shape[0]} logits for {len(wanted[k])} passages (query #{k})")
            out[k][wanted[k]] = arr  # type: ignore[index]
        return out

    def _build_verifier(self, verifier: Any):
        if verifier is None or verifier is False:
            return None
        from meteora.verifier import Verifier

        if verifier is True:
            if self.generator is None:
                raise InvalidInputError("verifier=True needs an LM: pass a generator, or a Verifier / callable verifier")
            return Verifier(self.generator)
        if isinstance(verifier, Verifier):
            return verifier
        if callable(verifier):
            check_callable_arity(verifier, 3, "verifier", "(query, passage, accepted) -> Verdict")
            return verifier
        raise InvalidInputError(
            f"verifier must be None, True, a meteora.Verifier or a callable (query, passage, accepted) -> Verdict; got {type(verifier).__name__}"
        )

    @classmethod
    def from_preset(cls, name: str, *, encoder: Any = None, **kwargs: Any) -> Reranker:
        """Build a reranker on a named generator preset, e.g. ``"med-rationale-mistral-7b"``.

        Generator options (``load_in_4bit``, ``device``, ``dtype``, ``adapter``, ``model``,
        ``template``, ``max_new_tokens``, ``cache``, ``trust_remote_code``) go to the
        generator; the rest to :class:`Reranker`.
        """
        from meteora.rationales.generator import RationaleGenerator

        gen_keys = {
            "load_in_4bit", "device", "dtype", "adapter", "cache", "trust_remote_code", "template", "model",
            "max_new_tokens",
        }
        gen_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in gen_keys}
        gen_kwargs.setdefault("cache", True)
        generator = RationaleGenerator.from_preset(name, **gen_kwargs)
        return cls(generator=generator, encoder=encoder, **kwargs)

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

    def _resolve_rationales(self, queries: Sequence[str], rationales: Sequence[Any] | None) -> list[tuple[list[str], Any]]:
        """Caller-given rationales (lists of str or RationaleSets), else the generator's."""
        if rationales is None:
            return self.rationales_for(queries)
        if isinstance(rationales, (str, bytes)) or not hasattr(rationales, "__len__"):
            raise InvalidInputError(f"rationales must be a list with one entry per query, got {type(rationales).__name__}")
        if len(rationales) != len(queries):
            raise InvalidInputError(f"got {len(rationales)} rationale lists for {len(queries)} queries")
        out: list[tuple[list[str], Any]] = []
        for i, (q, r) in enumerate(zip(queries, rationales, strict=True)):
            rset = None
            if not isinstance(r, (str, bytes)) and hasattr(r, "rationales"):  # a RationaleSet
                rset, r = r, r.rationales
            if isinstance(r, (str, bytes, Mapping)) or not isinstance(r, Iterable):
                raise InvalidInputError(f"rationales[{i}] must be a list of non-empty strings or a RationaleSet")
            texts = list(r)
            if not all(isinstance(t, str) and not is_blank(t) for t in texts):
                raise InvalidInputError(f"rationales[{i}] must be a list of non-empty strings")
            out.append((texts or [q], rset))
        return out

    def _encode_rationales(
        self, queries: Sequence[str], rats: Sequence[tuple[list[str], Any]], query_embeddings: Sequence[np.ndarray | None]
    ) -> list[np.ndarray]:
        """One batched encoder call for every rationale of every query; a rationale that
        is the query itself reuses the query's embedding when the retriever computed it."""
        flat: list[str] = []
        slots: list[list[int | None]] = []
        for q, (texts, _), qemb in zip(queries, rats, query_embeddings, strict=True):
            row: list[int | None] = []
            for t in texts:
                if qemb is not None and t == q:
                    row.append(None)
                else:
                    row.append(len(flat))
                    flat.append(t)
            slots.append(row)
        enc = np.asarray(self.encoder.encode(flat), dtype=np.float32) if flat else None
        out = []
        for row, qemb in zip(slots, query_embeddings, strict=True):
            vecs = [np.asarray(qemb, dtype=np.float32) if j is None else enc[j] for j in row]  # type: ignore[index]
            out.append(np.stack(vecs))
        return out

    def _embed_passages(self, passages: Sequence[Passage], embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is not None:
            emb = real_matrix(embeddings, "passage_embeddings")
            if emb.shape[0] != len(passages):
                raise InvalidInputError(
                    f"got {emb.shape[0]} passage embeddings for {len(passages)} passages; give one (d,) row per passage"
                )
            return emb.astype(np.float32)
        texts = [p.text if len(p.text) <= MAX_EMBED_CHARS else p.text[:MAX_EMBED_CHARS] for p in passages]
        return self.encoder.encode(texts)

    def _finish(self, query, passages, rationales, rset, passage_emb, context=None, rat_emb=None, evidence=None) -> RerankResult:
        if rat_emb is None:
            rat_emb = self.encoder.encode(rationales)
        selection = self.selector.select(
            rat_emb, passage_emb, passages, rationales=rationales, query=query, context=context, evidence=evidence
        )
        selected = list(selection.selected)
        verification = None
        if self.verifier is not None and selected:
            from meteora.verifier import Verifier, verify_with

            if isinstance(self.verifier, Verifier):
                flags = getattr(rset, "flags", None)
                verification = self.verifier.verify(query, selected, flag_instructions=flags)
            else:
                verification = verify_with(self.verifier, query, selected)
            selected = list(verification.accepted)
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
        queries = check_queries(queries)
        if isinstance(candidate_lists, (str, bytes, Mapping)) or not isinstance(candidate_lists, Iterable):
            raise InvalidInputError(
                "candidate_lists must be a list with one list of passages per query; got "
                f"{type(candidate_lists).__name__}"
            )
        candidate_lists = list(candidate_lists)
        if len(candidate_lists) != len(queries):
            raise InvalidInputError(
                "candidate_lists must be a list with one list of passages per query; got "
                f"{len(candidate_lists)} for {len(queries)} queries"
            )
        for name, per_query in (
            ("ids", ids), ("passage_embeddings", passage_embeddings), ("contexts", contexts),
            ("query_embeddings", query_embeddings),
        ):
            if per_query is None:
                continue
            if isinstance(per_query, (str, bytes)) or not hasattr(per_query, "__len__") or len(per_query) != len(queries):
                got = str(len(per_query)) if hasattr(per_query, "__len__") else type(per_query).__name__
                raise InvalidInputError(f"{name} must hold one entry (or None) per query; got {got} for {len(queries)} queries")
        pools: list[CandidatePool] = []
        for i, (q, cands) in enumerate(zip(queries, candidate_lists, strict=True)):
            try:
                passages = to_passages(cands, ids=ids[i] if ids is not None else None)
            except InvalidInputError as exc:
                raise InvalidInputError(f"query #{i}: {exc}") from exc
            if not passages:
                raise InvalidInputError(f"query #{i} has an empty candidate list; pass at least one passage")
            given = passage_embeddings[i] if passage_embeddings is not None else None
            qemb = query_embeddings[i] if query_embeddings is not None else None
            try:
                emb = self._embed_passages(passages, given) if given is not None else None
                ctx = to_passages(contexts[i]) if contexts is not None and contexts[i] is not None else None
                qemb = real_matrix(qemb, "query_embeddings", ndim=1) if qemb is not None else None
            except InvalidInputError as exc:
                raise InvalidInputError(f"query #{i}: {exc}") from exc
            pools.append(CandidatePool(q, passages, emb, ctx, qemb))
        return self.rerank_pools(pools, rationales=rationales)

    def rerank_pools(self, pools: Sequence[CandidatePool], *, rationales: Sequence[Any] | None = None) -> list[RerankResult]:
        """Select evidence in prepared :class:`~meteora.pipeline.CandidatePool` objects.

        The one implementation behind :meth:`rerank_batch` and :meth:`search_batch`:
        rationales for every pool (given, or one batched generation), one batched
        encode of the rationales, one of the passages without stored embeddings, then
        selection and verification per pool. A pool without candidates gives an empty
        result (nothing ranked or selected; the query stands in as the rationale and no
        rationales are generated for it).

        Example:
            >>> pools = rr.retrieve(["Does aspirin prevent stroke?"], retriever, k=20)  # doctest: +SKIP
            >>> rr.rerank_pools(pools)[0].selected_ids  # doctest: +SKIP
        """
        pools = list(pools)
        for i, pool in enumerate(pools):
            if not isinstance(pool, CandidatePool):
                raise InvalidInputError(f"pools[{i}] is a {type(pool).__name__}, not a meteora.pipeline.CandidatePool")
        if rationales is not None and (
            isinstance(rationales, (str, bytes)) or not hasattr(rationales, "__len__") or len(rationales) != len(pools)
        ):
            got = str(len(rationales)) if hasattr(rationales, "__len__") else type(rationales).__name__
            raise InvalidInputError(f"got {got} rationale lists for {len(pools)} queries")
        queries = [p.query for p in pools]
        live = [i for i, p in enumerate(pools) if p.passages]
        if len(live) < len(pools):
            logger.warning("%d of %d queries have no candidates; their results are empty", len(pools) - len(live), len(pools))
        resolved = self._resolve_rationales(
            [queries[i] for i in live], [rationales[i] for i in live] if rationales is not None else None
        )
        rats: list[tuple[list[str], Any]] = [([q], None) for q in queries]
        for i, r in zip(live, resolved, strict=True):
            rats[i] = r
        rat_embs = self._encode_rationales(queries, rats, [p.query_embedding for p in pools])
        to_embed = [i for i in live if pools[i].embeddings is None]
        fresh = _split(
            self._embed_passages([p for i in to_embed for p in pools[i].passages], None) if to_embed else np.zeros((0, 1)),
            [len(pools[i].passages) for i in to_embed],
        )
        pembs = dict(zip(to_embed, fresh, strict=True))
        evidence = self._evidence(queries, [p.passages for p in pools])
        results = []
        for i, pool in enumerate(pools):
            if i in pembs:
                pemb = pembs[i]
            elif pool.passages:
                pemb = self._embed_passages(pool.passages, pool.embeddings)
            else:
                pemb = np.zeros((0, rat_embs[i].shape[1]), dtype=np.float32)
            results.append(
                self._finish(pool.query, pool.passages, rats[i][0], rats[i][1], pemb, pool.context, rat_embs[i], evidence[i])
            )
        return results

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


def _settings_from(settings: SelectorSettings | None, floors: dict[str, Any] | None = None, **fields: Any) -> SelectorSettings:
    """``settings`` (default ``SelectorSettings()``) with the fields given as keywords
    replaced (``None`` keywords are "not given"; in ``floors`` a ``None`` turns a floor off)."""
    if settings is None:
        settings = SelectorSettings()
    elif not isinstance(settings, SelectorSettings):
        raise InvalidInputError(
            f"settings must be a meteora.SelectorSettings, got {type(settings).__name__}; "
            "build one with SelectorSettings(window=..., tau=...)"
        )
    given = {k: v for k, v in fields.items() if v is not None}
    given.update(floors or {})
    return settings.replace(**given) if given else settings


def _split(matrix: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split the rows of ``matrix`` into consecutive blocks of the given sizes."""
    out, start = [], 0
    for n in sizes:
        out.append(matrix[start : start + n])
        start += n
    return out
