"""What :meth:`~meteora.reranker.Reranker.rerank` returns: :class:`RerankResult`; and what
:meth:`~meteora.reranker.Reranker.rank` returns: a list of :class:`RankedDocument`.

One query's outcome: the selected passages, the full ranking, the rationales used,
and readable (:meth:`RerankResult.explain`) or JSON-ready (:meth:`RerankResult.to_dict`)
accounts of how the selection was made. :func:`ranked_documents` gives the same ranking
in the shape cross-encoder rerankers return: one entry per document, best first, with
its index in the caller's list.

Example:
    >>> from meteora.rerank_result import RerankResult
    >>> from meteora import Reranker
    >>> res = Reranker(generator=None).rerank("q", ["a", "b"])  # doctest: +SKIP
    >>> isinstance(res, RerankResult), res.selected_ids  # doctest: +SKIP
    (True, [...])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from meteora.errors import InvalidInputError
from meteora.relevance import relevance_score
from meteora.types import Passage, Ranking

__all__ = ["RerankResult", "RankedDocument", "ranked_documents"]


class RerankResult:
    """What :meth:`Reranker.rerank` returns for one query.

    Attributes:
        query: the query.
        selected: the selected passages (after verification), in the reranker's order
            (``"score"``: best first; ``"document"``: by document, then position).
        ranked: :class:`~meteora.types.Ranking` of every candidate, best first.
        rationales: the rationales used for selection.
        rationale_set: the generator's full output (raw text, dropped rationales,
            ``fallback`` flag), or ``None`` in query-only mode.
        selection: the selector's :class:`~meteora.selection.SelectionResult`.
        verification: the verifier's result, or ``None`` when it is off (with the default
            poison defence a :class:`~meteora.pool_stage.PoolVerification`).
        conflicts: passages of different documents whose findings disagree, each side
            named with what was kept and dropped and why
            (:class:`~meteora.conflicts.Conflict`; empty without a pool verifier).
    """

    def __init__(self, query, selected, ranked, rationales, rationale_set, selection, verification=None) -> None:
        self.query = query
        self.selected: list[Passage] = list(selected)
        self.ranked: Ranking = ranked
        self.rationales: list[str] = list(rationales)
        self.rationale_set = rationale_set
        self.selection = selection
        self.verification = verification

    @property
    def selected_ids(self) -> list[str]:
        return [p.id for p in self.selected]

    @property
    def score_scale(self) -> str:
        """The scale of ``ranked``'s scores: ``"probability"`` (the learned cut's
        P(relevant)) or ``"cosine"`` (the band and the elbow); see
        :func:`meteora.relevance.relevance_score`."""
        explanation = getattr(self.selection, "explanation", None)
        return getattr(explanation, "score_scale", "cosine")

    @property
    def conflicts(self) -> list[Any]:
        """The :class:`~meteora.conflicts.Conflict` objects the verifier reported."""
        return list(getattr(self.verification, "conflicts", None) or [])

    @property
    def fallback(self) -> bool:
        """True when the generator produced nothing usable and the query stood in."""
        return bool(getattr(self.rationale_set, "fallback", False))

    def top_k(self, k: int) -> Ranking:
        """The ``k`` best candidates of the full ranking (a fixed-k reranker view)."""
        return self.ranked.top_k(k)

    def explain(self) -> str:
        """Readable account: rationales, which rationale chose which passage, the
        elbow, expansion and verifier decisions."""
        lines = [f"query: {self.query}"]
        if self.rationale_set is not None and self.fallback:
            lines.append("rationales: none usable from the generator; the query was used instead")
        for i, r in enumerate(self.rationales):
            lines.append(f"  rationale {i}: {r}")
        lines.append(self.selection.explain())
        if self.verification is not None:
            for p, verdict in self.verification.rejected:
                lines.append(f"  verifier dropped {p.id}: {', '.join(verdict.flag_types) or 'flagged'} — {verdict.reason}")
            for pid in getattr(self.verification, "restored", None) or []:
                lines.append(f"  verifier restored {pid} (re-selected without the dropped documents)")
        for c in self.conflicts:
            lines.append(f"  {c.describe()}")
        lines.append(f"selected ({len(self.selected)}): {', '.join(self.selected_ids)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (used by ``meteora rerank --json``)."""
        out: dict[str, Any] = {
            "query": self.query,
            "selected": [{"id": p.id, "doc_id": p.doc_id, "position": p.position, "text": p.text} for p in self.selected],
            "ranked": [{"id": h.id, "score": h.score, "rank": h.rank} for h in self.ranked],
            "rationales": self.rationales,
            "fallback": self.fallback,
            "selection": self.selection.to_dict(),
        }
        if self.verification is not None:
            out["rejected"] = [
                {"id": p.id, "flag_types": v.flag_types, "reason": v.reason} for p, v in self.verification.rejected
            ]
            out["conflicts"] = [c.to_dict() for c in self.conflicts]
        return out

    def __repr__(self) -> str:
        return (
            f"RerankResult(query={self.query[:40]!r}, selected={self.selected_ids}, "
            f"candidates={len(self.ranked)}, rationales={len(self.rationales)})"
        )


@dataclass(frozen=True)
class RankedDocument:
    """One document of :meth:`Reranker.rank <meteora.reranker.Reranker.rank>`, in ranked order.

    Attributes:
        index: its position in the list given to ``rank`` (0-based).
        score: METEORA's ranking score (as ``result.ranked``, on ``result.score_scale``).
        relevance_score: ``score`` in [0, 1] (:func:`meteora.relevance.relevance_score`:
            the learned cut's P(relevant) as it is; a cosine-scale score rescaled).
        rank: 1-based rank.
        selected: in METEORA's selected set (the adaptive evidence set of :meth:`rerank`).
        id: the passage id (the index as a string unless the document gave one).
        document: the document's text (``None`` with ``return_documents=False``).
    """

    index: int
    score: float
    relevance_score: float
    rank: int
    selected: bool
    id: str
    document: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``document`` left out when not asked for)."""
        out = asdict(self)
        if self.document is None:
            out.pop("document")
        return out


def ranked_documents(
    result: RerankResult, passages: list[Passage], *, top_k: int | None = None, return_documents: bool = True
) -> list[RankedDocument]:
    """``result``'s full ranking as :class:`RankedDocument` entries, best first, cut at
    ``top_k``; ``passages`` are the candidates in the caller's order (for ``index``).

    Example:
        >>> from meteora import Reranker  # doctest: +SKIP
        >>> ps = to_passages(["a", "b"]); res = Reranker(generator=None).rerank("q", ps)  # doctest: +SKIP
        >>> [d.index for d in ranked_documents(res, ps, top_k=1)]  # doctest: +SKIP
        [1]
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInputError(f"top_k must be a positive integer or None (every document), got {top_k!r}")
    if not isinstance(return_documents, bool):
        raise InvalidInputError(f"return_documents must be True or False, got {return_documents!r}")
    index = {p.id: i for i, p in enumerate(passages)}
    selected = set(result.selected_ids)
    hits = list(result.ranked) if top_k is None else list(result.ranked)[:top_k]
    return [
        RankedDocument(
            index=index[h.id], score=float(h.score), relevance_score=relevance_score(h.score, result.score_scale), rank=int(h.rank),
            selected=h.id in selected, id=h.id, document=h.text if return_documents else None,
        )
        for h in hits
    ]
