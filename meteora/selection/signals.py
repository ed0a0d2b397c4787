"""What the selector knows about each candidate: :class:`CandidateSignals`.

Built once per query by the selector and read by every stage (above all the cut): each
rationale's cosine to each candidate, the pooled and the query cosine, the scorer's
evidence logits (NaN for a candidate the scorer did not read), documents, positions and
candidates per document, the retriever's own scores and ranks (a hybrid's per member),
and a BM25 of the query over the candidate list itself (:func:`candidate_bm25`).
:func:`similarities` is the first stage.

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

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from meteora.selection.validation import NORM_EPS
from meteora.types import Passage, Ranking

__all__ = ["CandidateSignals", "similarities", "candidate_bm25"]

logger = logging.getLogger(__name__)


def similarities(rationales: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, N)`` cosines and ``(N,)`` pooled cosines ``cos(mean r, c)`` of unit rows
    (clipped to ``[-1, 1]``; when the rationales cancel out, the mean cosine stands in).

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


def candidate_bm25(query: str, texts: Sequence[str]) -> np.ndarray:
    """``(N,)`` BM25 of ``query`` against the candidate texts themselves (IDF from the
    list): a lexical signal every candidate list has, whatever retriever (or none) made
    it. Lucene BM25 (k1 1.5, b 0.75, English stopwords) on numpy; 0 everywhere when no
    query word occurs in the list.

    Example:
        >>> (candidate_bm25("aspirin dose", ["aspirin dose was 81 mg", "dogs bark"]) > 0).tolist()
        [True, False]
    """
    from meteora.retrievers.bm25 import BM25Retriever

    if not texts or not query.strip():
        return np.zeros(len(texts), dtype=np.float64)
    bm25 = BM25Retriever(k1=1.5, b=0.75, method="lucene", stopwords="en", backend="numpy")
    if not any(bm25.tokenize(list(texts))):  # nothing indexable (stopwords, single letters)
        return np.zeros(len(texts), dtype=np.float64)
    bm25.index([{"id": str(i), "text": t} for i, t in enumerate(texts)])
    return np.asarray(bm25.get_scores(query), dtype=np.float64)


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
    """Per-candidate signals of one query (``N`` candidates, ``R`` rationales):
    ``rationale_cosines`` ``(R, N)``; ``pooled``, ``evidence`` (or ``None`` without a
    scorer; NaN for a candidate the scorer did not read) ``(N,)``; ``query_row``, the row
    that is the query itself (or ``None``); the retriever's ``retrieval_scores`` /
    ``retrieval_ranks`` (NaN where absent; ``None`` for caller-given candidates) and a
    hybrid's ``member_scores`` / ``member_ranks`` by member name; ``query``, the query's
    text, and ``query_cosines``, each candidate's cosine to the query's own embedding
    (``None`` when unknown; :attr:`query_cosine` then falls back to ``query_row``)."""

    passages: list[Passage]
    rationale_cosines: np.ndarray
    pooled: np.ndarray
    evidence: np.ndarray | None = None
    query_row: int | None = None
    retrieval_scores: np.ndarray | None = None
    retrieval_ranks: np.ndarray | None = None
    member_scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    member_ranks: Mapping[str, np.ndarray] = field(default_factory=dict)
    query: str | None = None
    query_cosines: np.ndarray | None = None

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
        query: str | None = None,
        query_embedding: np.ndarray | None = None,
    ) -> CandidateSignals:
        """The signals from unit-normalised embeddings, the scorer's logits, the
        retriever's ranking (its ``sources`` give the member columns) and the query (its
        text, and its unit-normalised embedding for :attr:`query_cosine`)."""
        sim, pooled = similarities(rationales, candidates)
        qcos = None
        if query_embedding is not None:
            qcos = np.clip(candidates @ np.asarray(query_embedding, dtype=np.float64), -1.0, 1.0)
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
            query,
            qcos,
        )

    def with_evidence(self, evidence: np.ndarray | None) -> CandidateSignals:
        """These signals with the scorer's logits (``(N,)``, NaN where not scored), keeping
        what was already computed (the candidate BM25)."""
        out = dataclasses.replace(self, evidence=evidence)
        if "lexical" in self.__dict__:
            out.__dict__["lexical"] = self.__dict__["lexical"]
        return out

    def subset(self, keep: Sequence[int]) -> CandidateSignals:
        """These signals of candidates ``keep`` only, in that order (the candidate BM25 is
        recomputed over the smaller list, as for a list retrieved without the others).

        Example:
            >>> from meteora.types import to_passages
            >>> s = CandidateSignals.build(np.eye(2)[:1], np.eye(2), to_passages(["fever", "cats"]))
            >>> s.subset([1]).ids, s.subset([1]).pooled.tolist()
            (['1'], [0.0])
        """
        idx = np.asarray(list(keep), dtype=np.int64)

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[idx]

        return dataclasses.replace(
            self,
            passages=[self.passages[i] for i in idx],
            rationale_cosines=self.rationale_cosines[:, idx],
            pooled=self.pooled[idx],
            evidence=cut(self.evidence),
            retrieval_scores=cut(self.retrieval_scores),
            retrieval_ranks=cut(self.retrieval_ranks),
            member_scores={k: v[idx] for k, v in self.member_scores.items()},
            member_ranks={k: v[idx] for k, v in self.member_ranks.items()},
            query_cosines=cut(self.query_cosines),
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
        """``(N,)`` cosine of the query to each candidate: from the query's embedding, or
        the rationale row that is the query; ``None`` when neither is known."""
        if self.query_cosines is not None:
            return self.query_cosines
        return None if self.query_row is None else self.rationale_cosines[self.query_row]

    @property
    def generated_rows(self) -> list[int]:
        """The rationale rows that are not the query itself."""
        return [j for j in range(self.rationale_cosines.shape[0]) if j != self.query_row]

    @functools.cached_property
    def lexical(self) -> np.ndarray | None:
        """``(N,)`` :func:`candidate_bm25` of the query over the candidates (computed once;
        ``None`` without the query's text)."""
        if self.query is None:
            return None
        return candidate_bm25(self.query, [p.text for p in self.passages])

    def document_best(self, values: np.ndarray) -> np.ndarray:
        """For each candidate, the largest of ``values`` among its document's candidates."""
        best: dict[str, float] = {}
        for d, v in zip(self.doc_ids, values, strict=True):
            best[d] = max(best.get(d, -np.inf), float(v))
        return np.array([best[d] for d in self.doc_ids], dtype=np.float64)

    def features(self) -> dict[str, np.ndarray]:
        """Every signal as a named ``(N,)`` float column (for a learned cut); the
        ``query_cosine``, ``evidence``/``evidence_gap``, ``retrieval_*`` and per-member
        columns only when known."""
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
