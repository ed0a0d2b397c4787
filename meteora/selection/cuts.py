"""The cut: how many candidates the pooled stage keeps, and (optionally) their scores.

A cut reads a query's :class:`~meteora.selection.signals.CandidateSignals` and returns a
:class:`CutResult`: the candidates it keeps, the order it ranked them in, and — when it
scores candidates itself — the score every candidate is ranked by. A cut also says which
candidates the evidence scorer should read (:func:`evidence_wanted`): the reranker calls
the scorer once, batched over its queries, for exactly those. Three cuts ship:

* :class:`~meteora.selection.learned_cut.LearnedCut` (the default): P(relevant) per
  candidate from two LightGBM models, the scorer reading stage 1's top 10, cut at the
  expected-F1 count;

* :class:`ElbowCut` (no evidence scorer): METEORA's adaptive elbow
  (:func:`~meteora.selection.elbow.elbow_cutoff`) over the pooled cosines, then the
  relevance floor;
* :class:`EvidenceBand` (with an evidence scorer): every chunk whose document-evidence
  score (:func:`document_evidence_score`) is within ``band`` of the best and at or above
  the floor. Pairing picks only inside the band (``CutResult.eligible``) and the
  document-evidence score is the ranking score.

Anything with the :class:`Cut` shape plugs in (``EvidenceSelector(settings, cut=...)``);
one without a ``wanted_evidence`` method gets the logits the band reads.

Example:
    >>> import numpy as np
    >>> from meteora.selection.signals import CandidateSignals
    >>> from meteora.types import to_passages
    >>> cos = np.array([0.9, 0.85, 0.3, 0.25])  # each candidate's cosine to the one rationale
    >>> s = CandidateSignals.build(np.array([[1.0, 0.0]]), np.stack([cos, np.sqrt(1 - cos**2)], 1), to_passages(list("abcd")))
    >>> ElbowCut(tau=1.0, min_similarity=0.2)(s).kept
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from meteora.errors import InvalidInputError
from meteora.selection.elbow import ElbowInfo, elbow_cutoff
from meteora.selection.signals import CandidateSignals

__all__ = [
    "Cut",
    "CutResult",
    "ElbowCut",
    "EvidenceBand",
    "document_evidence_score",
    "evidence_wanted",
    "shared_document_candidates",
    "relevance_floor",
    "ranked",
]

#: Slack below the band edge still inside the band (absorbs rounding of equal scores).
BAND_EPS = 1e-12


@dataclass(frozen=True)
class CutResult:
    """What a cut decided for one query.

    Attributes:
        kept: indices of the kept candidates, in the cut's order (best first).
        order: every candidate index ranked by the cut's score (descending, ties by
            candidate order).
        order_scores: that score in ``order``.
        scores: ``(N,)`` the score each candidate is ranked by in the result, or
            ``None`` to let the selector rank by ``max(pooled, pairing)``.
        eligible: ``(N,)`` mask of the candidates pairing may take, or ``None`` for the
            per-pair relevance floor.
        elbow: the elbow decision (:class:`ElbowCut`), else ``None``.
        below_floor: indices the elbow kept that the relevance floor dropped.
        evidence_weight / evidence_band: the knobs of :class:`EvidenceBand`, else ``None``.
        name: which cut decided (``"learned"``, ``"band"``, ``"elbow"``; ``"custom"``).
    """

    kept: list[int]
    order: np.ndarray
    order_scores: np.ndarray
    scores: np.ndarray | None = None
    eligible: np.ndarray | None = None
    elbow: ElbowInfo | None = None
    below_floor: list[int] = field(default_factory=list)
    evidence_weight: float | None = None
    evidence_band: float | None = None
    name: str = "custom"


@runtime_checkable
class Cut(Protocol):
    """A cut stage: the query's signals in, a :class:`CutResult` out."""

    def __call__(self, signals: CandidateSignals) -> CutResult: ...


def shared_document_candidates(signals: CandidateSignals) -> list[int]:
    """The candidates that share their document with another candidate (an evidence
    logit only matters against the rest of its document).

    Example:
        >>> from meteora.types import Passage
        >>> ps = [Passage("x", id=f"p{i}", doc_id=d) for i, d in enumerate("aab")]
        >>> s = CandidateSignals.build(np.eye(3)[:1], np.eye(3), ps)
        >>> shared_document_candidates(s)
        [0, 1]
    """
    sizes = signals.doc_sizes
    return [i for i in range(signals.n) if sizes[i] > 1]


def evidence_wanted(cut: Cut, signals: CandidateSignals) -> list[int]:
    """The candidates whose evidence logits ``cut`` reads: its ``wanted_evidence(signals)``,
    or, for a cut without one, those :class:`EvidenceBand` reads."""
    wanted = getattr(cut, "wanted_evidence", None)
    if wanted is None:
        return shared_document_candidates(signals)
    return sorted({int(i) for i in wanted(signals)})


def ranked(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate indices by descending score (stable: ties by candidate order) and the
    sorted scores.

    Example:
        >>> order, s = ranked(np.array([0.1, 0.5, 0.5]))
        >>> order.tolist(), s.tolist()
        ([1, 2, 0], [0.5, 0.5, 0.1])
    """
    order = np.argsort(-scores, kind="stable") if scores.size else np.zeros(0, dtype=int)
    return order, scores[order]


def relevance_floor(scores: np.ndarray, floor: float | None) -> np.ndarray:
    """Mask of the scores at or above ``floor`` (all of them when the floor is off).

    Example:
        >>> relevance_floor(np.array([0.1, 0.3]), 0.2).tolist(), relevance_floor(np.array([0.1]), None).tolist()
        ([False, True], [True])
    """
    return scores >= floor if floor is not None else np.ones(scores.shape, dtype=bool)


def document_evidence_score(pooled: np.ndarray, logits: np.ndarray, doc_ids: Sequence[str], weight: float) -> np.ndarray:
    """``max cos over the chunk's document + weight * (logit - max logit of the document)``.

    Example:
        >>> document_evidence_score(np.array([0.5, 0.3]), np.array([1.0, 3.0]), ["d", "d"], 0.1).round(2).tolist()
        [0.3, 0.5]
    """
    best_cos: dict[str, float] = {}
    best_logit: dict[str, float] = {}
    for d, c, lg in zip(doc_ids, pooled, logits, strict=True):
        best_cos[d] = max(best_cos.get(d, -np.inf), float(c))
        best_logit[d] = max(best_logit.get(d, -np.inf), float(lg))
    return np.array(
        [best_cos[d] + weight * (float(lg) - best_logit[d]) for d, lg in zip(doc_ids, logits, strict=True)],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class ElbowCut:
    """METEORA's pooled elbow: keep the top of the pooled cosines up to the first
    outstanding gap (:func:`~meteora.selection.elbow.elbow_cutoff` with ``tau``), then
    drop the kept chunks below the relevance floor ``min_similarity``."""

    tau: float = 1.0
    min_similarity: float | None = 0.2

    def wanted_evidence(self, signals: CandidateSignals) -> list[int]:
        """None: the elbow reads no evidence logits."""
        return []

    def __call__(self, signals: CandidateSignals) -> CutResult:
        order, order_scores = ranked(signals.pooled)
        elbow = elbow_cutoff(order_scores, self.tau)
        ok = relevance_floor(signals.pooled, self.min_similarity)
        head = [int(i) for i in order[: elbow.keep]]
        return CutResult(
            kept=[i for i in head if ok[i]],
            order=order,
            order_scores=order_scores,
            elbow=elbow,
            below_floor=[i for i in head if not ok[i]],
            name="elbow",
        )


@dataclass(frozen=True)
class EvidenceBand:
    """With an evidence scorer: score each chunk by its document's relevance plus its
    weighted evidence gap (:func:`document_evidence_score`) and keep every chunk within
    ``band`` of the best score and at or above ``min_similarity``; pairing may take only
    those, and the result is ranked by that score. It reads the logits of the chunks
    that share their document with another candidate (a chunk alone in its document
    scores its document's relevance whatever its logit)."""

    weight: float
    band: float
    min_similarity: float | None = 0.2

    def wanted_evidence(self, signals: CandidateSignals) -> list[int]:
        """The chunks that share their document with another candidate."""
        return shared_document_candidates(signals)

    def __call__(self, signals: CandidateSignals) -> CutResult:
        if signals.evidence is None:
            raise InvalidInputError("EvidenceBand needs the evidence scorer's logits (signals.evidence)")
        logits = np.nan_to_num(signals.evidence, nan=0.0)  # NaN: not read, a chunk alone in its document
        score = document_evidence_score(signals.pooled, logits, signals.doc_ids, self.weight)
        ok = relevance_floor(score, self.min_similarity)
        if signals.n:
            ok = ok & (score >= score.max() - self.band - BAND_EPS)
        order, order_scores = ranked(score)
        return CutResult(
            kept=[int(i) for i in order if ok[int(i)]],
            order=order,
            order_scores=order_scores,
            scores=score.astype(np.float64).copy(),
            eligible=ok,
            evidence_weight=self.weight,
            evidence_band=self.band,
            name="band",
        )
