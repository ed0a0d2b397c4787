"""Conflicts: passages of different documents that disagree on the question's finding.

When the passages a reranker selected (or the ones its verifier dropped) come from
documents whose findings point in opposite directions — one reports an effect, another
none (:func:`meteora.findings.finding`) — the result says so instead of silently keeping
one side: a :class:`Conflict` names the passages on each side, what was kept and what
was dropped, and why. :class:`~meteora.rerank_result.RerankResult` carries them as
``conflicts`` (also in ``to_dict()``, ``explain()``, the server's ``/v1/select`` and the
LangChain / LlamaIndex metadata).

Example:
    >>> from meteora.types import to_passages
    >>> ps = to_passages([{"text": "Mortality was significantly lower (p < 0.01).", "id": "a-1", "doc_id": "a"},
    ...                   {"text": "There was no difference in mortality (p = 0.6).", "id": "b-0", "doc_id": "b"}])
    >>> [c.to_dict()["sides"] for c in find_conflicts(ps)]
    [{'effect': ['a-1'], 'no effect': ['b-0']}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meteora.findings import Finding, finding
from meteora.types import Passage

__all__ = ["Conflict", "find_conflicts", "SIDES"]

#: The labels of the two sides of a conflict, for a finding sign of +1 and -1.
SIDES = {1: "effect", -1: "no effect"}


@dataclass(frozen=True)
class Conflict:
    """Passages of different documents whose findings disagree.

    Attributes:
        sides: ``{"effect": [ids], "no effect": [ids]}``: the passages on each side.
        documents: the documents on each side, same keys.
        kept: the passages of either side still in the selection.
        dropped: the passages of either side the verifier dropped.
        reason: what was decided and why (e.g. which side was more suspicious).
    """

    sides: dict[str, list[str]]
    documents: dict[str, list[str]]
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "sides": {k: list(v) for k, v in self.sides.items()},
            "documents": {k: list(v) for k, v in self.documents.items()},
            "kept": list(self.kept),
            "dropped": list(self.dropped),
            "reason": self.reason,
        }

    def describe(self) -> str:
        """One line for :meth:`~meteora.rerank_result.RerankResult.explain`."""
        sides = " vs ".join(f"{label}: {', '.join(ids)}" for label, ids in self.sides.items())
        return f"conflict ({sides}) — {self.reason}"


def find_conflicts(
    passages: Sequence[Passage],
    dropped: Mapping[str, str] | None = None,
    *,
    findings: Mapping[str, Finding] | None = None,
) -> list[Conflict]:
    """The conflict among ``passages`` (the selection plus what a verifier dropped), if any.

    Passages are grouped by the sign of their finding; there is a conflict when both
    groups are non-empty and they do not come from exactly the same documents.

    Args:
        passages: the passages to compare (typically the final selection and the
            dropped passages that had been selected).
        dropped: ``{passage id: why it was dropped}`` for the dropped ones.
        findings: precomputed findings by passage id (computed when absent).

    Returns:
        A list with at most one :class:`Conflict` (one per question: the two sides).
    """
    dropped = dict(dropped or {})
    sides: dict[int, list[str]] = {1: [], -1: []}
    docs: dict[int, list[str]] = {1: [], -1: []}
    for p in passages:
        f = (findings or {}).get(p.id) or finding(p.text)
        if f.sign:
            sides[f.sign].append(p.id)
            if p.doc_id not in docs[f.sign]:
                docs[f.sign].append(p.doc_id)
    if not sides[1] or not sides[-1] or set(docs[1]) == set(docs[-1]):
        return []
    ids = sides[1] + sides[-1]
    gone = [p for p in ids if p in dropped]
    kept = [p for p in ids if p not in dropped]
    if gone:
        reason = "documents disagree; " + "; ".join(f"dropped {p}: {dropped[p]}" for p in gone)
    else:
        reason = "documents disagree; both sides kept (neither is clearly more suspicious)"
    return [Conflict({SIDES[s]: sides[s] for s in (1, -1)}, {SIDES[s]: docs[s] for s in (1, -1)}, kept, gone, reason)]
