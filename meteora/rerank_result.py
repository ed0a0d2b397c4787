"""What :meth:`~meteora.reranker.Reranker.rerank` returns: :class:`RerankResult`.

One query's outcome: the selected passages, the full ranking, the rationales used,
and readable (:meth:`RerankResult.explain`) or JSON-ready (:meth:`RerankResult.to_dict`)
accounts of how the selection was made.

Example:
    >>> from meteora.rerank_result import RerankResult
    >>> from meteora import Reranker
    >>> res = Reranker(generator=None).rerank("q", ["a", "b"])  # doctest: +SKIP
    >>> isinstance(res, RerankResult), res.selected_ids  # doctest: +SKIP
    (True, [...])
"""

from __future__ import annotations

from typing import Any

from meteora.types import Passage, Ranking

__all__ = ["RerankResult"]


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
