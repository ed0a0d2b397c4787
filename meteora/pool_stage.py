"""The verifier stage that sees the whole candidate pool: :class:`PoolView`, :class:`PoolVerifier`.

A per-passage verifier (``(query, passage, accepted) -> Verdict``) can only drop what the
selector picked. When an added document *displaces* the real evidence — it scores above
it and the selection keeps it alone — dropping it leaves nothing: the displaced evidence
has to come back. A :class:`PoolVerifier` therefore gets a :class:`PoolView` of the query:

* the query, every candidate and the selector's :class:`~meteora.selection.SelectionResult`;
* per candidate: its cosine to the query, its ranking score, and the evidence scorer's
  logit on demand (:meth:`PoolView.evidence_logits`: computed lazily, batched, only for
  the passages asked for — the pipeline reads a logit only where a document has several
  candidates);
* :meth:`PoolView.reselect`: the selector's own selection (whatever its cut: the
  evidence band, the elbow, a learned cut) on the pool without some passages;
* ``doc_sizes``: how many chunks each candidate's document has in the retriever's
  corpus, when the pool came from a retriever (``None`` otherwise).

It returns a :class:`PoolVerification` (a :class:`~meteora.verdicts.VerificationResult`
with the final selection, the conflicts it found and each candidate's suspicion).
:class:`~meteora.pool_defence.PoolDefence` is the packaged one; anything with
``verify_pool(view)`` plugs into ``Reranker(verifier=...)``.

Example:
    >>> class DropDoc:
    ...     def __init__(self, doc): self.doc = doc
    ...     def verify_pool(self, view):
    ...         out = [p.id for p in view.candidates if p.doc_id == self.doc]
    ...         return PoolVerification.from_selection(view, view.reselect(out), {i: "blocked" for i in out})
    >>> isinstance(DropDoc("x"), PoolVerifier)
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from meteora.conflicts import Conflict
from meteora.errors import InvalidInputError
from meteora.selection.results import SelectionResult
from meteora.types import Passage
from meteora.verdicts import Verdict, VerificationResult

__all__ = ["PoolView", "PoolVerification", "PoolVerifier"]

logger = logging.getLogger(__name__)


class PoolView:
    """What a pool verifier sees of one query (built by the reranker; see the module doc).

    Args:
        query: the query.
        candidates: every candidate, in pool order.
        selection: the selector's result on the whole pool.
        query_cosines: ``(N,)`` cosine of the query to each candidate.
        reselect: ``excluded ids -> SelectionResult``: the selector on the pool minus
            those passages.
        known_logits: ``(N,)`` evidence logits the pipeline computed (NaN where it did
            not), or ``None`` without a scorer.
        score_logits: ``texts -> logits`` for this query (the scorer), or ``None``.
        doc_sizes: chunks per document in the retriever's corpus, or ``None``.

    Example:
        >>> from meteora.types import to_passages
        >>> import numpy as np
        >>> from meteora.selection.selector import EvidenceSelector
        >>> ps = to_passages(["fever", "cats"])
        >>> sel = EvidenceSelector().select(np.eye(2)[:1], np.eye(2), ps)
        >>> v = PoolView("q", ps, sel, np.array([1.0, 0.0]), lambda ex: sel,
        ...              score_logits=lambda texts: [len(t) for t in texts])
        >>> v.evidence_logits([1]).tolist(), v.scores.tolist()
        ([4.0], [1.0, 0.0])
    """

    def __init__(
        self,
        query: str,
        candidates: Sequence[Passage],
        selection: SelectionResult,
        query_cosines: np.ndarray,
        reselect: Callable[[Collection[str]], SelectionResult],
        *,
        known_logits: np.ndarray | None = None,
        score_logits: Callable[[list[str]], Any] | None = None,
        doc_sizes: Mapping[str, int] | None = None,
    ) -> None:
        self.query = query
        self.candidates = list(candidates)
        self.selection = selection
        self.query_cosines = np.asarray(query_cosines, dtype=np.float64)
        self._reselect = reselect
        self._score_logits = score_logits
        n = len(self.candidates)
        self._logits = (
            np.full(n, np.nan) if known_logits is None else np.asarray(known_logits, dtype=np.float64).copy()
        )
        self.doc_sizes = dict(doc_sizes) if doc_sizes is not None else None
        self.index = {p.id: i for i, p in enumerate(self.candidates)}
        self.scores = np.array(
            [selection.scores[p.id].score if p.id in selection.scores else -np.inf for p in self.candidates],
            dtype=np.float64,
        )
        #: how many evidence logits this view had to compute (the lazy cost)
        self.logits_computed = 0

    @property
    def has_logits(self) -> bool:
        """Whether evidence logits are available (a scorer, or the pipeline's own)."""
        return self._score_logits is not None or not np.all(np.isnan(self._logits))

    def evidence_logits(self, indices: Sequence[int]) -> np.ndarray:
        """The evidence scorer's logits of candidates ``indices`` (absolute scale):
        the pipeline's where it computed them, the others in one batched scorer call.

        Raises:
            ValueError: a logit is needed but the reranker has no evidence scorer.
            InvalidInputError: the scorer returned the wrong number of logits.
        """
        idx = [int(i) for i in indices]
        todo = sorted({i for i in idx if np.isnan(self._logits[i])})
        if todo:
            if self._score_logits is None:
                raise ValueError("this pool has no evidence scorer to compute logits with")
            fresh = np.asarray(self._score_logits([self.candidates[i].text for i in todo]), dtype=np.float64).reshape(-1)
            if fresh.shape[0] != len(todo) or not np.all(np.isfinite(fresh)):
                raise InvalidInputError(
                    f"the evidence scorer returned {fresh.shape[0]} logits (finite: {bool(np.all(np.isfinite(fresh)))}) "
                    f"for {len(todo)} passages; evidence_logits must return one finite logit per passage"
                )
            self._logits[todo] = fresh
            self.logits_computed += len(todo)
        return self._logits[idx]

    def reselect(self, excluded: Collection[str]) -> SelectionResult:
        """The selector's selection on the pool without the ``excluded`` passage ids."""
        return self._reselect(set(excluded)) if excluded else self.selection

    def doc_size(self, doc_id: str) -> int:
        """Chunks of ``doc_id`` in the corpus (when known), else among the candidates."""
        if self.doc_sizes is not None and doc_id in self.doc_sizes:
            return int(self.doc_sizes[doc_id])
        return sum(p.doc_id == doc_id for p in self.candidates)

    def __repr__(self) -> str:
        return f"PoolView(query={self.query[:40]!r}, candidates={len(self.candidates)}, selected={self.selection.selected_ids})"


@dataclass
class PoolVerification(VerificationResult):
    """What a pool verifier decided (a :class:`~meteora.verdicts.VerificationResult`).

    Attributes:
        accepted: the final selection (after any re-selection), in the selector's order.
        rejected: ``(passage, verdict)`` of every dropped candidate.
        verdicts: the verdict of every passage the verifier judged, by id.
        conflicts: the :class:`~meteora.conflicts.Conflict` objects found.
        suspicion: each judged candidate's suspicion in ``[0, 1]``, by id.
        restored: selected passages the selector had not picked at first (they came back
            when what displaced them was dropped, or the guard added them).
        selection: the selector's result on the pool without the dropped passages (the
            original one when nothing was dropped).
    """

    conflicts: list[Conflict] = field(default_factory=list)
    suspicion: dict[str, float] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)
    selection: SelectionResult | None = None

    @classmethod
    def from_selection(
        cls,
        view: PoolView,
        selection: SelectionResult,
        dropped: Mapping[str, str] | None = None,
        *,
        extra: Sequence[Passage] = (),
        conflicts: Sequence[Conflict] = (),
        suspicion: Mapping[str, float] | None = None,
        flag_types: Mapping[str, list[str]] | None = None,
    ) -> PoolVerification:
        """A result from a (re-)selection, the dropped ids with their reasons and the
        passages to add after the selection (``extra``)."""
        dropped = dict(dropped or {})
        suspicion = dict(suspicion or {})
        first = set(view.selection.selected_ids)
        accepted = [p for p in selection.selected if p.id not in dropped]
        have = {p.id for p in accepted}
        accepted += [p for p in extra if p.id not in have and p.id not in dropped]
        verdicts: dict[str, Verdict] = {}
        rejected: list[tuple[Passage, Verdict]] = []
        for pid, why in dropped.items():
            i = view.index.get(pid)
            if i is None:
                continue
            v = Verdict(True, True, list((flag_types or {}).get(pid, ["POISON"])), why, round(suspicion.get(pid, 1.0), 4))
            verdicts[pid] = v
            rejected.append((view.candidates[i], v))
        for p in accepted:
            s = suspicion.get(p.id)
            verdicts[p.id] = Verdict(True, False, [], "" if s is None else f"suspicion {s:.2f}",
                                     round(1.0 - s, 4) if s is not None else 1.0)
        return cls(
            accepted=accepted, rejected=rejected, verdicts=verdicts, conflicts=list(conflicts),
            suspicion={k: round(float(v), 4) for k, v in suspicion.items()},
            restored=[p.id for p in accepted if p.id not in first], selection=selection,
        )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(conflicts=[c.to_dict() for c in self.conflicts], suspicion=dict(self.suspicion),
                   restored=list(self.restored))
        return out

    def __repr__(self) -> str:
        return (f"PoolVerification(accepted={self.accepted_ids}, rejected={self.rejected_ids}, "
                f"conflicts={len(self.conflicts)})")


@runtime_checkable
class PoolVerifier(Protocol):
    """A verifier stage over the candidate pool: ``verify_pool(view) -> PoolVerification``."""

    def verify_pool(self, view: PoolView) -> PoolVerification: ...
