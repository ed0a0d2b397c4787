"""What the selector knows about each candidate: :class:`CandidateSignals`.

Built once per query by :class:`~meteora.selection.selector.EvidenceSelector` and handed
to every stage, so a stage (above all the cut, :mod:`meteora.selection.cuts`) reads one
typed table instead of loose arrays:

* the cosine of every rationale to every candidate (``rationale_cosines``, ``(R, N)``),
  the cosine to the pooled rationale (``pooled``) and, when one rationale is the query
  itself, the query cosine;
* the evidence scorer's logits (``evidence``), when there is a scorer;
* each candidate's document, position and how many candidates share its document;
* the retriever's own score and rank of each candidate and, for a hybrid, each
  member's score and rank (when the candidates came from a retriever).

:func:`similarities` is the first stage: unit-normalised rationale and candidate
embeddings in, the ``(R, N)`` cosines and the pooled cosines out.

Example:
    >>> import numpy as np
    >>> from meteora.types import to_passages
    >>> s = CandidateSignals.build(np.eye(2)[:1], np.eye(2), to_passages(["fever", "cats"]), query_row=0)
    >>> s.pooled.tolist(), s.query_cosine.tolist(), s.doc_sizes.tolist()
    ([1.0, 0.0], [1.0, 0.0], [1, 1])
    >>> sorted(s.features())[:3]
    ['candidate_rank', 'doc_best_pooled', 'doc_size']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from meteora.selection.validation import NORM_EPS
from meteora.types import Passage, Ranking

__all__ = ["CandidateSignals", "similarities"]

logger = logging.getLogger(__name__)


def similarities(rationales: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cos(r_j, c_i) as an (R, N) matrix, cos(mean_j r_j, c_i) as (N,))`` of unit rows.

    When the rationales average to (almost) zero — opposed rationales — the pooled
    direction is undefined and the mean of the similarities, which orders the
    candidates the same way, stands in. Pooled cosines are clipped to ``[-1, 1]``.

    Example:
        >>> sim, pooled = similarities(np.eye(2), np.eye(2))
        >>> sim.tolist(), pooled.round(3).tolist()
        ([[1.0, 0.0], [0.0, 1.0]], [0.707, 0.707])
    """
    sim = rationales @ candidates.T
    pooled_vec = rationales.mean(axis=0)
    norm = float(np.linalg.norm(pooled_vec))
    if norm > NORM_EPS:
        pooled = candidates @ (pooled_vec / norm)
    else:
        logger.warning("the rationale embeddings average to ~0; using the mean similarity as the pooled score")
        pooled = sim.mean(axis=0) if candidates.shape[0] else np.zeros(0)
    return sim, np.clip(pooled, -1.0, 1.0)


def _retrieval_columns(ranking: Ranking | None, ids: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The ranking's score and 1-based rank of each id (NaN where it is absent)."""
    if ranking is None:
        return None, None
    found = {h.id: (float(h.score), float(h.rank)) for h in ranking}
    scores = np.array([found.get(i, (np.nan, np.nan))[0] for i in ids], dtype=np.float64)
    ranks = np.array([found.get(i, (np.nan, np.nan))[1] for i in ids], dtype=np.float64)
    return scores, ranks


@dataclass(frozen=True)
class CandidateSignals:
    """Per-candidate signals of one query (``N`` candidates, ``R`` rationales).

    Attributes:
        passages: the ``N`` candidates.
        rationale_cosines: ``(R, N)`` cosine of each rationale to each candidate.
        pooled: ``(N,)`` cosine to the pooled (mean) rationale, in ``[-1, 1]``.
        evidence: ``(N,)`` evidence-scorer logits, or ``None`` without a scorer.
        query_row: the row of ``rationale_cosines`` that is the query itself (the
            reranker's ``include_query`` anchor, or the only rationale in query-only
            mode), or ``None``.
        retrieval_scores / retrieval_ranks: ``(N,)`` the retriever's own score and
            1-based rank of each candidate (NaN where it did not return one), or
            ``None`` for caller-given candidates.
        member_scores / member_ranks: for a hybrid retriever, the same per member
            (by member name); empty otherwise.
    """

    passages: list[Passage]
    rationale_cosines: np.ndarray
    pooled: np.ndarray
    evidence: np.ndarray | None = None
    query_row: int | None = None
    retrieval_scores: np.ndarray | None = None
    retrieval_ranks: np.ndarray | None = None
    member_scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    member_ranks: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        rationales: np.ndarray,
        candidates: np.ndarray,
        passages: Sequence[Passage],
        *,
        evidence: np.ndarray | None = None,
        query_row: int | None = None,
        retrieval: Ranking | None = None,
    ) -> CandidateSignals:
        """The signals from unit-normalised embeddings (see :func:`similarities`), the
        scorer's logits and the retriever's ranking (its ``sources``, a hybrid's member
        rankings, give the member columns)."""
        sim, pooled = similarities(rationales, candidates)
        ids = [p.id for p in passages]
        scores, ranks = _retrieval_columns(retrieval, ids)
        members = getattr(retrieval, "sources", None) or {}
        member_cols = {name: _retrieval_columns(r, ids) for name, r in members.items()}
        return cls(
            list(passages),
            sim,
            pooled,
            evidence,
            query_row,
            scores,
            ranks,
            {name: s for name, (s, _) in member_cols.items()},
            {name: r for name, (_, r) in member_cols.items()},
        )

    @property
    def n(self) -> int:
        """The number of candidates."""
        return len(self.passages)

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.passages]

    @property
    def doc_ids(self) -> list[str]:
        return [p.doc_id for p in self.passages]

    @property
    def positions(self) -> np.ndarray:
        return np.array([p.position for p in self.passages], dtype=np.int64)

    @property
    def doc_sizes(self) -> np.ndarray:
        """How many candidates share each candidate's document (itself included)."""
        counts: dict[str, int] = {}
        for d in self.doc_ids:
            counts[d] = counts.get(d, 0) + 1
        return np.array([counts[d] for d in self.doc_ids], dtype=np.int64)

    @property
    def query_cosine(self) -> np.ndarray | None:
        """``(N,)`` cosine of the query to each candidate, when a rationale is the query."""
        return None if self.query_row is None else self.rationale_cosines[self.query_row]

    def document_best(self, values: np.ndarray) -> np.ndarray:
        """For each candidate, the largest of ``values`` among its document's candidates."""
        best: dict[str, float] = {}
        for d, v in zip(self.doc_ids, values, strict=True):
            best[d] = max(best.get(d, -np.inf), float(v))
        return np.array([best[d] for d in self.doc_ids], dtype=np.float64)

    def features(self) -> dict[str, np.ndarray]:
        """Every signal as a named ``(N,)`` float column (for a learned cut).

        Always: ``pooled``, ``rationale_max``, ``rationale_mean``, ``doc_best_pooled``,
        ``position``, ``doc_size``, ``n_candidates``, ``candidate_rank`` (order given);
        when known: ``query_cosine``, ``evidence``, ``evidence_gap`` (logit minus the best
        of its document), ``retrieval_score``, ``retrieval_rank``, and
        ``<member>_score`` / ``<member>_rank`` per hybrid member.
        """
        n = self.n
        sim = self.rationale_cosines
        cols: dict[str, np.ndarray] = {
            "pooled": self.pooled.astype(np.float64),
            "rationale_max": sim.max(axis=0) if n else np.zeros(0),
            "rationale_mean": sim.mean(axis=0) if n else np.zeros(0),
            "doc_best_pooled": self.document_best(self.pooled),
            "position": self.positions.astype(np.float64),
            "doc_size": self.doc_sizes.astype(np.float64),
            "n_candidates": np.full(n, float(n)),
            "candidate_rank": np.arange(1, n + 1, dtype=np.float64),
        }
        if self.query_cosine is not None:
            cols["query_cosine"] = self.query_cosine.astype(np.float64)
        if self.evidence is not None:
            cols["evidence"] = self.evidence.astype(np.float64)
            cols["evidence_gap"] = self.evidence - self.document_best(self.evidence)
        if self.retrieval_scores is not None and self.retrieval_ranks is not None:
            cols["retrieval_score"] = self.retrieval_scores
            cols["retrieval_rank"] = self.retrieval_ranks
        for name in self.member_scores:
            cols[f"{name}_score"] = self.member_scores[name]
            cols[f"{name}_rank"] = self.member_ranks[name]
        return cols
