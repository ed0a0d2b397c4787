"""The one selection pipeline's building blocks: selector settings and candidate pools.

Every caller that selects evidence — :class:`~meteora.Reranker` (``rerank``,
``search``), the benchmark's ``meteora*`` methods, the QA evaluation's ``meteora``
conditions and the DPO preference builder — goes through :class:`~meteora.Reranker`,
which uses what this module defines:

* :class:`SelectorSettings`: the selector knobs (pairing, tau, window, stage switches,
  order, and whether expansion may reach the candidates' whole documents), one frozen,
  validated, typed object instead of six loose parameters;
* :class:`CandidatePool`: one query's candidates, with the retriever's stored
  embeddings and the document context expansion may add;
* :func:`retrieve_pools`: candidates for many queries in one batched retriever call.

The path of a query: ``Reranker.search_batch`` → :func:`retrieve_pools` → rationales
(one batched generation) → one batched encode → ``EvidenceSelector.select`` → verifier.

Example:
    >>> s = SelectorSettings(window=1)
    >>> s.replace(pairing="convergent").to_dict()["pairing"]
    'convergent'
    >>> SelectorSettings(window=-1)
    Traceback (most recent call last):
    ...
    meteora.errors.InvalidInputError: window must be a non-negative integer (0 disables expansion), got -1
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.types import Passage, Ranking, check_queries

__all__ = [
    "SelectorSettings",
    "CandidatePool",
    "retrieve_pools",
    "dense_member",
    "stored_embeddings",
    "document_context",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectorSettings:
    """The evidence selector's knobs, validated once.

    Attributes:
        pairing: ``"distinct"`` (each rationale takes a chunk no earlier rationale
            took) or ``"convergent"`` (plain argmax).
        tau: z-score threshold of the pooled elbow.
        window: expansion window: neighbours ``position ± 1..window`` of a selected
            chunk's document are added. ``0`` (the default) disables expansion, the
            drop-in reranker setting of the spec.
        use_pairing / use_pooling: run the pairing / pooled-elbow stage (ablations;
            at least one must be on).
        order: ``"score"`` or ``"document"`` order of the selection.
        expand_from_documents: with ``window > 0``, expansion may add neighbours from
            the candidates' whole documents (the retriever's corpus), not only
            neighbours that are candidates themselves.
        min_similarity: without an evidence scorer, no chunk whose cosine to the
            rationale (pairing) or pooled rationale (pooling) is below this is selected
            (default 0.2: 99 % of PubMedQA *train* evidence chunks have a cosine of at
            least 0.30 to their question, unrelated text sits near 0); ``None``: off.
        evidence_weight / evidence_band: with an evidence scorer, how much a chunk's
            evidence-logit gap to the best chunk of its document lowers its score, and
            how far below the best score a chunk may be and still be selected (see
            :mod:`meteora.selection`). ``"calibrated"`` (default) takes the values
            calibrated on held-out train questions when the scorer was trained.

    Raises:
        InvalidInputError: a value the selector would refuse; the message says which
            and what to use instead.

    Example:
        >>> SelectorSettings(tau=0.5, order="document").replace(window=2)
        SelectorSettings(pairing='distinct', tau=0.5, window=2, use_pairing=True, use_pooling=True, order='document', expand_from_documents=True, min_similarity=0.2, evidence_weight='calibrated', evidence_band='calibrated')
    """

    pairing: str = "distinct"
    tau: float = 1.0
    window: int = 0
    use_pairing: bool = True
    use_pooling: bool = True
    order: str = "score"
    expand_from_documents: bool = True
    min_similarity: float | None = 0.2
    evidence_weight: float | str = "calibrated"
    evidence_band: float | str = "calibrated"

    def __post_init__(self) -> None:
        from meteora.selection import EvidenceSelector

        # the selector's own checks are the one place these values are validated
        for name in ("evidence_weight", "evidence_band"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "calibrated":
                raise InvalidInputError(f"{name} must be 'calibrated' or a non-negative number, got {value!r}")
        knobs = {n: getattr(self, n) for n in ("evidence_weight", "evidence_band") if getattr(self, n) != "calibrated"}
        sel = EvidenceSelector(
            pairing=self.pairing,
            tau=self.tau,
            window=self.window,
            use_pairing=self.use_pairing,
            use_pooling=self.use_pooling,
            order=self.order,
            min_similarity=self.min_similarity,
            **knobs,
        )
        object.__setattr__(self, "min_similarity", sel.min_similarity)
        for name in knobs:
            object.__setattr__(self, name, getattr(sel, name))
        if not isinstance(self.expand_from_documents, (bool, np.bool_)):
            raise InvalidInputError(
                f"expand_from_documents must be True or False, got {self.expand_from_documents!r}"
            )
        object.__setattr__(self, "tau", sel.tau)
        object.__setattr__(self, "window", sel.window)
        object.__setattr__(self, "use_pairing", sel.use_pairing)
        object.__setattr__(self, "use_pooling", sel.use_pooling)
        object.__setattr__(self, "expand_from_documents", bool(self.expand_from_documents))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> SelectorSettings:
        """A copy with some fields changed (validated again).

        Raises:
            InvalidInputError: an unknown field name.
        """
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise InvalidInputError(
                f"unknown selector setting(s) {unknown}; the settings are {list(self.field_names())}"
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SelectorSettings:
        """Settings from a mapping such as :meth:`to_dict`'s output (unknown keys refused)."""
        if not isinstance(values, Mapping):
            raise InvalidInputError(f"selector settings must be a mapping, got {type(values).__name__}")
        return cls().replace(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    def selector(self, calibrated: dict[str, float] | None = None) -> Any:
        """An :class:`~meteora.selection.EvidenceSelector` with these settings;
        ``calibrated`` holds the scorer's ``evidence_weight``/``evidence_band`` that
        ``"calibrated"`` stands for (the selector's defaults when absent)."""
        from meteora.selection import EvidenceSelector

        return EvidenceSelector.from_settings(self, calibrated=calibrated)

    @property
    def uses_context(self) -> bool:
        """Whether expansion may add chunks from the candidates' documents."""
        return self.window > 0 and self.expand_from_documents


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
    """

    query: str
    passages: list[Passage]
    embeddings: np.ndarray | None = None
    context: list[Passage] | None = None
    query_embedding: np.ndarray | None = None
    ranking: Ranking | None = None

    def __len__(self) -> int:
        return len(self.passages)


def dense_member(retriever: Any, encoder: Any = None) -> Any:
    """The dense retriever itself or a hybrid's dense member (with ``encoder`` when given).

    Example:
        >>> dense_member(object()) is None
        True
    """
    for r in [retriever, *getattr(retriever, "retrievers", [])]:
        if hasattr(r, "embeddings_for") and hasattr(r, "encoder"):
            if encoder is None or r.encoder is encoder:
                return r
    return None


def stored_embeddings(retriever: Any, encoder: Any, ids: Sequence[str]) -> np.ndarray | None:
    """Corpus embeddings a dense retriever (or one inside a hybrid) with ``encoder`` holds."""
    dense = dense_member(retriever, encoder)
    return None if dense is None else dense.embeddings_for(list(ids))


_DOC_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def document_context(retriever: Any, passages: Sequence[Passage]) -> list[Passage] | None:
    """The chunks of the candidates' documents in the retriever's corpus, in position order."""
    corpus = getattr(retriever, "passages", None)
    if not corpus:
        return None
    try:
        index = _DOC_INDEX.get(retriever)
    except TypeError:  # not weak-referenceable
        index = None
    if index is None or index[0] != len(corpus):
        by_doc: dict[str, list[Passage]] = {}
        for p in corpus:
            by_doc.setdefault(p.doc_id, []).append(p)
        for chunks in by_doc.values():
            chunks.sort(key=lambda p: p.position)
        index = (len(corpus), by_doc)
        try:
            _DOC_INDEX[retriever] = index
        except TypeError:
            pass
    docs = dict.fromkeys(p.doc_id for p in passages)
    return [p for d in docs for p in index[1].get(d, [])]


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
    if not callable(getattr(retriever, "search", None)):
        raise InvalidInputError(
            f"retriever must be a meteora retriever (BM25Retriever, DenseRetriever, HybridRetriever or one "
            f"loaded with load_retriever), got {type(retriever).__name__}"
        )
    if not queries:
        return []
    qemb: np.ndarray | None = None
    if (
        hasattr(retriever, "search_embeddings")
        and hasattr(retriever, "encode_queries")
        and getattr(retriever, "encoder", None) is encoder
    ):
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
        context = document_context(retriever, passages) if passages and settings.uses_context else None
        pools.append(
            CandidatePool(
                q, passages, emb, context, qemb[i] if qemb is not None else None, ranking
            )
        )
    return pools
