"""Stage 2 of METEORA: the evidence chunk selection engine (ECSE), embeddings only.

Given rationale embeddings ``r_j`` and candidate chunk embeddings ``c_i`` (both are
L2-normalised here, so the caller need not), the similarity matrix is
``S[j, i] = cos(r_j, c_i)`` and the selection runs in four steps:

1. **Pairing** (local). Each rationale, in order, picks one chunk.
   ``pairing="distinct"`` masks chunks already taken, so each rationale adds a new
   chunk (the paper's experiments); ``pairing="convergent"`` is a plain argmax with
   duplicates allowed. The *pairing score* of a chunk is the largest similarity among
   the rationales that chose it.
2. **Pooling + elbow** (global, adaptive k). ``p = mean_j r_j`` (re-normalised),
   ``s_i = cos(p, c_i)``, sorted descending, and cut by :func:`elbow_cutoff`.
3. **Union** of the two selections.
4. **Expansion**. Every selected chunk pulls in its neighbours ``position ± 1..window``
   of the same ``doc_id`` that are among the candidates or in the optional ``context``
   passages (typically the rest of the candidates' documents, so expansion can reach a
   neighbour the retriever did not return).

The result also ranks *all* candidates by ``score = max(pooled, pairing)``, so the
selector doubles as a re-ranker with :meth:`SelectionResult.top_k`. Scores are raw
cosine similarities in ``[-1, 1]`` to the rationales (never min-max normalised across
the candidate set), so a threshold means the same thing for every query.

**Evidence of relevance.** A stage never selects a chunk just because it must pick
something: pairing and pooling skip chunks whose cosine is below ``min_similarity``
(default 0.2: on PubMedQA *train* questions 99 % of the answer-bearing chunks have a
cosine of at least 0.30 to the question, while unrelated text sits near 0).

**With an evidence scorer** (:class:`meteora.scorer.EvidenceScorer`, a cross-encoder
giving each candidate an *evidence logit*), ``select(..., evidence=logits)`` scores a
chunk by two heads: how relevant its **document** is (the best pooled cosine among the
candidates of its ``doc_id``) and whether it is the chunk of that document that holds
the finding (``evidence_weight`` times its logit minus the best logit of its document,
0 for the best one)::

    score_i = max_{j in doc(i)} cos(p, c_j) + evidence_weight * (logit_i - max_{j in doc(i)} logit_j)

The pooled cut is then a relevance **band**: every chunk whose score is within
``evidence_band`` of the best score (and at or above ``min_similarity``) is kept — as
many as are about as good as the best one. Pairing picks only inside the band. Scores
stay on the cosine scale; a passage that is its document's only candidate scores its
plain cosine.

Example:
    >>> import numpy as np
    >>> from meteora.types import to_passages
    >>> passages = to_passages(["fever", "aspirin", "cats"])
    >>> sel = EvidenceSelector(window=0)
    >>> res = sel.select(np.array([[1.0, 0.0]]), np.array([[0.9, 0.1], [0.8, 0.6], [0.0, 1.0]]), passages)
    >>> res.selected_ids
    ['0']
    >>> res.ranking.ids
    ['0', '1', '2']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.types import Passage, Ranking

if TYPE_CHECKING:
    from meteora.pipeline import SelectorSettings

__all__ = [
    "ElbowInfo",
    "elbow_cutoff",
    "RationalePair",
    "ChunkScore",
    "SelectionExplanation",
    "SelectionResult",
    "EvidenceSelector",
    "PAIRING_MODES",
    "ORDERS",
]

logger = logging.getLogger(__name__)

PAIRING_MODES = ("distinct", "convergent")
ORDERS = ("score", "document")

#: A population standard deviation of the gaps at or below this counts as zero: the gaps
#: are equal up to floating-point noise, so their z-scores would be meaningless.
STD_EPS = 1e-9
#: Second differences within this of the maximum count as tied (the first one wins).
TIE_EPS = 1e-9
#: A z-score must exceed ``tau`` by more than this to pass: z-scores that equal ``tau``
#: up to rounding (two gaps always give exactly ±1, computed as 1.0000000002) do not.
Z_EPS = 1e-9
_NORM_EPS = 1e-12


# --------------------------------------------------------------------------- elbow


@dataclass
class ElbowInfo:
    """Where and why :func:`elbow_cutoff` cut a descending score list.

    Attributes:
        keep: how many of the top items to keep (``index + 1``).
        rule: ``"all"`` (N ≤ 2, nothing to decide), ``"zscore"`` (a gap's z-score
            exceeded ``tau``) or ``"second-difference"`` (the fallback).
        gaps: ``d_t = s_(t) - s_(t+1)`` for ``t = 0 .. N-2``.
        z_scores: ``(d_t - mean(d)) / std(d)`` with the population std; all zeros when
            the std is (numerically) zero or there are no gaps.
        index: the gap index ``t`` of the cut, so ``keep = index + 1``; for rule
            ``"all"`` it is ``N - 1`` (``-1`` for an empty list).
        tau: the threshold used.
        second_differences: ``d_t - d_(t+1)`` for ``t = 0 .. N-3`` (computed for the
            fallback; empty otherwise).
    """

    keep: int
    rule: str
    gaps: np.ndarray
    z_scores: np.ndarray
    index: int
    tau: float = 1.0
    second_differences: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "keep": int(self.keep),
            "rule": self.rule,
            "index": int(self.index),
            "tau": float(self.tau),
            "gaps": [float(x) for x in self.gaps],
            "z_scores": [float(x) for x in self.z_scores],
            "second_differences": [float(x) for x in self.second_differences],
        }

    def __repr__(self) -> str:
        return f"ElbowInfo(keep={self.keep}, rule={self.rule!r}, index={self.index}, tau={self.tau})"


def _check_floor(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a number in [{low}, {high}] or None, got {value!r}")
    if not low <= float(value) <= high:
        raise InvalidInputError(f"{name} must be in [{low}, {high}] (or None to disable it), got {value!r}")
    return float(value)


def _check_evidence(evidence: Any, n: int) -> np.ndarray | None:
    if evidence is None:
        return None
    try:
        arr = np.asarray(evidence, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"evidence must be an array of {n} evidence logits: {exc}") from exc
    if arr.shape != (n,):
        raise InvalidInputError(f"evidence must have one logit per candidate, shape ({n},); got {arr.shape}")
    if n and not np.all(np.isfinite(arr)):
        raise InvalidInputError("evidence logits must be finite numbers")
    return arr


def _document_evidence_score(pooled: np.ndarray, logits: np.ndarray, doc_ids: Sequence[str], weight: float) -> np.ndarray:
    """``max cos over the chunk's document + weight * (logit - max logit of the document)``."""
    best_cos: dict[str, float] = {}
    best_logit: dict[str, float] = {}
    for d, c, lg in zip(doc_ids, pooled, logits, strict=True):
        best_cos[d] = max(best_cos.get(d, -np.inf), float(c))
        best_logit[d] = max(best_logit.get(d, -np.inf), float(lg))
    return np.array(
        [best_cos[d] + weight * (float(lg) - best_logit[d]) for d, lg in zip(doc_ids, logits, strict=True)],
        dtype=np.float64,
    )


def _check_tau(tau: Any) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not math.isfinite(tau):
        raise InvalidInputError(f"tau must be a finite number (the z-score threshold, default 1.0), got {tau!r}")
    return float(tau)


def elbow_cutoff(scores_desc: np.ndarray, tau: float = 1.0) -> ElbowInfo:
    """Adaptive cutoff of a descending score list (METEORA's pooled elbow).

    Rule, for ``N = len(scores_desc)``:

    * ``N ≤ 2``: keep everything (rule ``"all"``).
    * gaps ``d_t = s_(t) - s_(t+1)``; ``z_t = (d_t - mean(d)) / std(d)`` (population
      std). Cut at the **first** ``t`` with ``z_t > tau`` (by more than ``Z_EPS``, so
      rounding noise never passes) and keep the top ``t + 1`` (rule ``"zscore"``).
    * if no gap passes, or ``std(d) ≤ STD_EPS`` (equal gaps): cut at the largest
      second difference ``Δ²_t = d_t - d_(t+1) = s_(t) - 2 s_(t+1) + s_(t+2)``,
      ``t = 0 .. N-3``, i.e. at the gap that most exceeds the gap after it (the drop
      after which the curve flattens most), and keep the top ``t + 1``. Ties (within
      ``TIE_EPS``) go to the first ``t``. So equal gaps keep 1 item, and ``N = 3`` with
      ``tau ≥ 1`` always falls back (two gaps always have z-scores ``±1``) and keeps 1.

    Args:
        scores_desc: 1-D scores sorted in non-increasing order.
        tau: z-score threshold (default 1.0).

    Raises:
        InvalidInputError: not 1-D, not finite, not sorted descending, or a bad ``tau``.

    Example:
        >>> info = elbow_cutoff(np.array([0.9, 0.5, 0.45, 0.4]))
        >>> info.keep, info.rule
        (1, 'zscore')
    """
    tau = _check_tau(tau)
    try:
        s = np.asarray(scores_desc, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"scores_desc must be a 1-D array of numbers: {exc}") from exc
    if s.ndim != 1:
        raise InvalidInputError(f"scores_desc must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("scores_desc contains NaN or infinite values")
    n = s.shape[0]
    gaps = s[:-1] - s[1:] if n >= 2 else np.zeros(0)
    if np.any(gaps < 0):
        raise InvalidInputError("scores_desc must be sorted in descending (non-increasing) order; sort it first")
    if n <= 2:
        z = np.zeros_like(gaps)
        return ElbowInfo(keep=n, rule="all", gaps=gaps, z_scores=z, index=n - 1, tau=tau)
    mean = float(gaps.mean())
    std = float(gaps.std())  # population std (ddof=0)
    if std > STD_EPS:
        z = (gaps - mean) / std
        passing = np.flatnonzero(z > tau + Z_EPS)
        if passing.size:
            t = int(passing[0])
            return ElbowInfo(keep=t + 1, rule="zscore", gaps=gaps, z_scores=z, index=t, tau=tau)
    else:
        z = np.zeros_like(gaps)
    second = gaps[:-1] - gaps[1:]
    best = float(second.max())
    t = int(np.flatnonzero(second >= best - TIE_EPS)[0])
    return ElbowInfo(
        keep=t + 1, rule="second-difference", gaps=gaps, z_scores=z, index=t, tau=tau, second_differences=second
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RationalePair:
    """One pairing decision: rationale ``rationale_index`` chose ``passage_id``."""

    rationale_index: int
    passage_id: str
    similarity: float
    rationale: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rationale_index": self.rationale_index,
            "rationale": self.rationale,
            "passage_id": self.passage_id,
            "similarity": float(self.similarity),
        }


@dataclass(frozen=True)
class ChunkScore:
    """Score components of one candidate.

    Attributes:
        pooled: cosine similarity to the pooled (mean) rationale, in ``[-1, 1]``.
        pairing: largest cosine similarity among the rationales that chose this chunk
            in pairing, or ``None`` when no rationale chose it.
        score: the ranking score: ``max(pooled, pairing)``, or with a scorer the
            document relevance plus the weighted evidence-logit gap (see the module doc).
        evidence: the evidence scorer's logit, or ``None`` without a scorer.
    """

    pooled: float
    pairing: float | None
    score: float
    evidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"pooled": float(self.pooled), "pairing": None if self.pairing is None else float(self.pairing), "score": float(self.score)}
        if self.evidence is not None:
            out["evidence"] = float(self.evidence)
        return out


@dataclass
class SelectionExplanation:
    """Why each chunk was selected.

    Attributes:
        pairs: the pairing decisions, in rationale order.
        unpaired_rationales: rationales that chose nothing (distinct pairing with more
            rationales than candidates).
        pooled_order: all candidate ids sorted by pooled similarity (descending, ties by
            candidate order).
        pooled_scores: the pooled similarities in ``pooled_order``.
        elbow: the cutoff on ``pooled_scores`` (``None`` when pooling is off).
        sources: for every selected id, the stages that selected it
            (``"pairing"``, ``"pooling"``, ``"expansion"``).
        expansion_added: ids that only expansion added, in the order they were added.
        pairing_mode, window, tau, order: the selector settings used.
    """

    pairs: list[RationalePair]
    unpaired_rationales: list[int]
    pooled_order: list[str]
    pooled_scores: list[float]
    elbow: ElbowInfo | None
    sources: dict[str, set[str]]
    expansion_added: list[str]
    pairing_mode: str | None
    window: int
    tau: float
    order: str
    min_similarity: float | None = None
    evidence_band: float | None = None
    evidence_weight: float | None = None
    below_floor: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_similarity": self.min_similarity,
            "evidence_band": self.evidence_band,
            "evidence_weight": self.evidence_weight,
            "below_floor": list(self.below_floor),
            "pairs": [p.to_dict() for p in self.pairs],
            "unpaired_rationales": list(self.unpaired_rationales),
            "pooled_order": list(self.pooled_order),
            "pooled_scores": [float(x) for x in self.pooled_scores],
            "elbow": None if self.elbow is None else self.elbow.to_dict(),
            "sources": {k: sorted(v) for k, v in self.sources.items()},
            "expansion_added": list(self.expansion_added),
            "pairing_mode": self.pairing_mode,
            "window": self.window,
            "tau": self.tau,
            "order": self.order,
        }


class SelectionResult:
    """The output of :meth:`EvidenceSelector.select`.

    Attributes:
        selected: the selected passages, in the selector's ``order``.
        selected_ids: their ids.
        ranking: every candidate ranked by ``score = max(pooled, pairing)`` (descending,
            ties by candidate order). A score is a cosine similarity in ``[-1, 1]``
            between the passage and the rationales (the pooled rationale, or the
            rationale that paired with it, whichever is higher); it is not normalised
            across candidates, so thresholds carry over between queries.
        scores: score components per passage id.
        explanation: which rationale chose which chunk, the elbow, the sources.
    """

    def __init__(
        self,
        selected: list[Passage],
        ranking: Ranking,
        scores: dict[str, ChunkScore],
        explanation: SelectionExplanation,
    ) -> None:
        self.selected = selected
        self.ranking = ranking
        self.scores = scores
        self.explanation = explanation

    @property
    def selected_ids(self) -> list[str]:
        return [p.id for p in self.selected]

    def __len__(self) -> int:
        return len(self.selected)

    def top_k(self, k: int) -> Ranking:
        """The best ``k`` candidates of the full ranking (ignores the selection)."""
        return self.ranking.top_k(k)

    def explain(self) -> str:
        """A human-readable, multi-line account of the selection."""
        ex = self.explanation
        n = len(self.ranking)
        lines = [f"Selected {len(self.selected)} of {n} candidates (order: {ex.order})."]
        if ex.pairing_mode is not None:
            lines.append(f"Pairing ({ex.pairing_mode}):")
            if not ex.pairs:
                lines.append("  (no pairs)")
            for p in ex.pairs:
                label = f" {_short(p.rationale)!r}" if p.rationale else ""
                lines.append(f"  rationale {p.rationale_index}{label} -> {p.passage_id} (cos {p.similarity:.3f})")
            for j in ex.unpaired_rationales:
                lines.append(f"  rationale {j} chose nothing (every candidate taken or below the relevance floor)")
        else:
            lines.append("Pairing: off")
        if ex.elbow is not None:
            e = ex.elbow
            kept = ex.pooled_order[: e.keep]
            if e.rule == "all":
                why = f"kept all {e.keep} (N <= 2)"
            elif e.rule == "zscore":
                why = f"first gap with z > {e.tau:g} is gap {e.index} (z = {float(e.z_scores[e.index]):.2f}, gap {float(e.gaps[e.index]):.3f})"
            else:
                why = (
                    f"no gap with z > {e.tau:g}; largest second difference at gap {e.index} "
                    f"({float(e.second_differences[e.index]):.3f})"
                )
            lines.append(f"Pooling: elbow keeps top {e.keep} [{e.rule}]: {why}")
            if kept:
                lines.append("  kept: " + ", ".join(f"{pid} ({s:.3f})" for pid, s in zip(kept, ex.pooled_scores, strict=False)))
        elif ex.evidence_band is not None and any("pooling" in v for v in ex.sources.values()):
            kept_ids = [pid for pid in ex.pooled_order if "pooling" in ex.sources.get(pid, ())]
            lines.append(f"Pooling: evidence band keeps {len(kept_ids)}: " + ", ".join(kept_ids))
        else:
            lines.append("Pooling: off" if ex.evidence_band is None else "Pooling: nothing above the relevance floor")
        if ex.evidence_band is not None:
            lines.append(
                f"Evidence scorer: document relevance + {ex.evidence_weight:g} x evidence-logit gap; "
                f"kept the chunks within {ex.evidence_band:g} of the best score"
            )
        if ex.min_similarity is not None:
            lines.append(f"Relevance floor: cosine >= {ex.min_similarity:g}")
        if ex.below_floor:
            lines.append("  dropped below the floor: " + ", ".join(ex.below_floor))
        if ex.window > 0:
            added = ", ".join(ex.expansion_added) if ex.expansion_added else "nothing"
            lines.append(f"Expansion (window {ex.window}): added {added}")
        else:
            lines.append("Expansion: off (window 0)")
        if self.selected:
            lines.append("Selected:")
            for i, p in enumerate(self.selected, 1):
                sc = self.scores[p.id]
                src = ", ".join(sorted(ex.sources.get(p.id, ())))
                lines.append(
                    f"  {i}. {p.id} (doc {p.doc_id}, pos {p.position}) score {sc.score:.3f} [{src}] {_short(p.text)!r}"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (passages, ranking, scores, explanation)."""
        return {
            "selected_ids": self.selected_ids,
            "selected": [p.to_dict() for p in self.selected],
            "ranking": [{"id": h.id, "score": float(h.score), "rank": h.rank} for h in self.ranking],
            "scores": {pid: s.to_dict() for pid, s in self.scores.items()},
            "explanation": self.explanation.to_dict(),
        }

    def __repr__(self) -> str:
        ids = self.selected_ids
        head = ", ".join(ids[:8]) + (f", … +{len(ids) - 8}" if len(ids) > 8 else "")
        return f"SelectionResult({len(ids)} of {len(self.ranking)} selected: [{head}])"


def _short(text: str | None, n: int = 60) -> str:
    if text is None:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- selector


def _as_matrix(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything array-like may fail here
        raise InvalidInputError(f"{name} must be a numeric array: {exc}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must hold real numbers (float), got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _normalise_rows(arr: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(arr, axis=1)
    bad = np.flatnonzero(norms <= _NORM_EPS)
    if bad.size:
        raise InvalidInputError(
            f"{name} row(s) {bad[:5].tolist()} have zero norm, so their cosine similarity is undefined; "
            "check the encoder output for those texts"
        )
    return arr / norms[:, None]


class EvidenceSelector:
    """METEORA's evidence chunk selection engine (ECSE).

    Args:
        pairing: ``"distinct"`` (each rationale takes a chunk no earlier rationale took)
            or ``"convergent"`` (plain argmax; several rationales may choose one chunk).
        tau: z-score threshold of the pooled elbow (see :func:`elbow_cutoff`).
        window: expansion window ``w``: neighbours ``position ± 1..w`` of the same
            document that are among the candidates are added. ``0`` disables expansion
            (drop-in reranker); the paper uses ``1``.
        use_pairing: run the pairing stage.
        use_pooling: run the pooled-elbow stage.
        order: order of ``selected``: ``"score"`` (final score, descending) or
            ``"document"`` (documents in the order their best chunk ranks, chunks by
            position inside a document).
        min_similarity: without a scorer, pairing and pooling select no chunk whose
            cosine (to the rationale / pooled rationale) is below this; ``None``
            disables the floor.
        evidence_weight: with a scorer (``select(..., evidence=logits)``), how much a
            chunk's evidence-logit gap to the best chunk of its document lowers its score.
        evidence_band: with a scorer, the pooled cut keeps every chunk whose score is
            within this of the best score.

    Raises:
        InvalidInputError: unknown ``pairing`` / ``order``, negative or non-integer
            ``window``, non-finite ``tau``, or both stages switched off.

    Example:
        >>> sel = EvidenceSelector(pairing="convergent", window=1, order="document")
        >>> sel
        EvidenceSelector(pairing='convergent', tau=1.0, window=1, use_pairing=True, use_pooling=True, order='document', min_similarity=0.2, evidence_weight=0.03, evidence_band=0.06)
    """

    def __init__(
        self,
        pairing: str = "distinct",
        tau: float = 1.0,
        window: int = 0,
        use_pairing: bool = True,
        use_pooling: bool = True,
        order: str = "score",
        min_similarity: float | None = 0.2,
        evidence_weight: float = 0.03,
        evidence_band: float = 0.06,
    ) -> None:
        if pairing not in PAIRING_MODES:
            raise InvalidInputError(f"unknown pairing {pairing!r}; choose one of {list(PAIRING_MODES)}")
        if order not in ORDERS:
            raise InvalidInputError(f"unknown order {order!r}; choose one of {list(ORDERS)}")
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise InvalidInputError(f"window must be a non-negative integer (0 disables expansion), got {window!r}")
        for name, flag in (("use_pairing", use_pairing), ("use_pooling", use_pooling)):
            if not isinstance(flag, (bool, np.bool_)):
                raise InvalidInputError(f"{name} must be True or False, got {flag!r}")
        if not use_pairing and not use_pooling:
            raise InvalidInputError("use_pairing and use_pooling are both False, so nothing can be selected; enable at least one")
        self.pairing = pairing
        self.tau = _check_tau(tau)
        self.window = int(window)
        self.use_pairing = bool(use_pairing)
        self.use_pooling = bool(use_pooling)
        self.order = order
        self.min_similarity = _check_floor(min_similarity, "min_similarity", -1.0, 1.0)
        self.evidence_weight = _check_floor(evidence_weight, "evidence_weight", 0.0, 10.0)
        self.evidence_band = _check_floor(evidence_band, "evidence_band", 0.0, 2.0)
        if self.evidence_weight is None or self.evidence_band is None:
            raise InvalidInputError("evidence_weight and evidence_band must be numbers, not None")

    @classmethod
    def from_settings(cls, settings: SelectorSettings, *, calibrated: dict[str, float] | None = None) -> EvidenceSelector:
        """A selector with the knobs of a :class:`~meteora.pipeline.SelectorSettings`.

        (``settings.expand_from_documents`` concerns where the caller's ``context``
        comes from, so it is not a selector attribute.) ``"calibrated"`` evidence knobs
        take the values in ``calibrated`` (a scorer's calibration), else the defaults.

        Example:
            >>> from meteora.pipeline import SelectorSettings
            >>> EvidenceSelector.from_settings(SelectorSettings(window=2)).window
            2
        """
        for name in ("pairing", "tau", "window", "use_pairing", "use_pooling", "order"):
            if not hasattr(settings, name):
                raise InvalidInputError(
                    f"settings must be a meteora.pipeline.SelectorSettings, got {type(settings).__name__}"
                )
        extra = {
            k: getattr(settings, k) for k in ("min_similarity", "evidence_weight", "evidence_band") if hasattr(settings, k)
        }
        for k in ("evidence_weight", "evidence_band"):
            if extra.get(k) == "calibrated":
                if calibrated and k in calibrated:
                    extra[k] = calibrated[k]
                else:
                    del extra[k]
        return cls(
            pairing=settings.pairing,
            tau=settings.tau,
            window=settings.window,
            use_pairing=settings.use_pairing,
            use_pooling=settings.use_pooling,
            order=settings.order,
            **extra,
        )

    def __repr__(self) -> str:
        return (
            f"EvidenceSelector(pairing={self.pairing!r}, tau={self.tau}, window={self.window}, "
            f"use_pairing={self.use_pairing}, use_pooling={self.use_pooling}, order={self.order!r}, "
            f"min_similarity={self.min_similarity}, evidence_weight={self.evidence_weight}, "
            f"evidence_band={self.evidence_band})"
        )

    # ----------------------------------------------------------------- validation
    def _validate(
        self,
        rationale_embeddings: Any,
        passage_embeddings: Any,
        passages: Sequence[Passage],
        rationales: Sequence[str] | None,
    ) -> tuple[np.ndarray, np.ndarray, list[Passage], list[str] | None]:
        if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
            raise InvalidInputError(
                f"passages must be a sequence of meteora.Passage, got {type(passages).__name__}; "
                "convert inputs with meteora.types.to_passages"
            )
        plist = list(passages)
        for i, p in enumerate(plist):
            if not isinstance(p, Passage):
                raise InvalidInputError(
                    f"passages[{i}] is a {type(p).__name__}, not a meteora.Passage; convert with meteora.types.to_passages"
                )
        seen: dict[str, int] = {}
        for i, p in enumerate(plist):
            if p.id in seen:
                raise InvalidInputError(f"duplicate passage id {p.id!r} (passages #{seen[p.id]} and #{i}); ids must be unique")
            seen[p.id] = i
        r = _as_matrix(rationale_embeddings, "rationale_embeddings")
        if r.ndim != 2:
            raise InvalidInputError(
                f"rationale_embeddings must be 2-D (R, d), got shape {r.shape}; for one rationale use x[None, :]"
            )
        if r.shape[0] < 1:
            raise InvalidInputError("rationale_embeddings has no rows; give at least one rationale (e.g. the query)")
        if r.shape[1] < 1:
            raise InvalidInputError(f"rationale_embeddings has dimension 0 (shape {r.shape})")
        if not np.all(np.isfinite(r)):
            raise InvalidInputError("rationale_embeddings contains NaN or infinite values")
        n = len(plist)
        c = _as_matrix(passage_embeddings, "passage_embeddings")
        if n == 0:
            if c.size != 0:
                raise InvalidInputError(f"passage_embeddings has shape {c.shape} but there are no passages")
            c = np.zeros((0, r.shape[1]))
        else:
            if c.ndim != 2:
                raise InvalidInputError(f"passage_embeddings must be 2-D (N, d), got shape {c.shape}")
            if c.shape[0] != n:
                raise InvalidInputError(
                    f"passage_embeddings has {c.shape[0]} rows for {n} passages; give one embedding per passage"
                )
            if c.shape[1] != r.shape[1]:
                raise InvalidInputError(
                    f"embedding dimensions differ: rationales {r.shape[1]}, passages {c.shape[1]}; "
                    "encode both with the same model"
                )
            if not np.all(np.isfinite(c)):
                bad = np.flatnonzero(~np.all(np.isfinite(c), axis=1))
                raise InvalidInputError(
                    f"passage_embeddings contains NaN or infinite values (rows {bad[:5].tolist()})"
                )
        texts: list[str] | None = None
        if rationales is not None:
            if isinstance(rationales, str) or not isinstance(rationales, Sequence):
                raise InvalidInputError(f"rationales must be a list of str, got {type(rationales).__name__}")
            texts = [str(t) for t in rationales]
            if len(texts) != r.shape[0]:
                raise InvalidInputError(
                    f"got {len(texts)} rationale texts for {r.shape[0]} rationale embeddings; give one text per row"
                )
        return _normalise_rows(r, "rationale_embeddings"), (
            _normalise_rows(c, "passage_embeddings") if n else c
        ), plist, texts

    # ----------------------------------------------------------------- stages
    def _pair(
        self, sim: np.ndarray, texts: list[str] | None, ids: list[str], allowed: np.ndarray
    ) -> tuple[list[RationalePair], list[int], dict[int, float], list[int]]:
        """Pairing decisions, unpaired rationales, pairing score and choice per chunk index.

        ``allowed[j, i]`` is False where rationale ``j`` may not take chunk ``i`` (below
        the relevance floor)."""
        chosen: list[int] = []
        pairs: list[RationalePair] = []
        unpaired: list[int] = []
        best: dict[int, float] = {}
        taken = np.zeros(sim.shape[1], dtype=bool)
        for j in range(sim.shape[0]):
            blocked = ~allowed[j]
            if self.pairing == "distinct":
                blocked = blocked | taken
            if blocked.all():
                unpaired.append(j)
                continue
            row = np.where(blocked, -np.inf, sim[j])
            i = int(np.argmax(row))  # first maximum: ties go to the earlier candidate
            taken[i] = True
            chosen.append(i)
            s = float(sim[j, i])
            pairs.append(RationalePair(j, ids[i], s, texts[j] if texts is not None else None))
            best[i] = max(best.get(i, -np.inf), s)
        return pairs, unpaired, best, chosen

    def _expand(self, selected: list[int], plist: list[Passage]) -> list[int]:
        if self.window == 0 or not selected:
            return []
        where: dict[tuple[str, int], list[int]] = {}
        for i, p in enumerate(plist):
            where.setdefault((p.doc_id, p.position), []).append(i)
        chosen = set(selected)
        added: list[int] = []
        for i in selected:
            p = plist[i]
            for off in range(1, self.window + 1):
                for pos in (p.position - off, p.position + off):
                    for k in where.get((p.doc_id, pos), ()):
                        if k not in chosen:
                            chosen.add(k)
                            added.append(k)
        return added

    # ----------------------------------------------------------------- select
    def select(
        self,
        rationale_embeddings: np.ndarray,
        passage_embeddings: np.ndarray,
        passages: Sequence[Passage],
        *,
        rationales: Sequence[str] | None = None,
        query: str | None = None,
        context: Sequence[Passage] | None = None,
        evidence: Any = None,
    ) -> SelectionResult:
        """Select evidence chunks and rank all candidates.

        Args:
            rationale_embeddings: ``(R, d)`` embeddings of the rationales (R ≥ 1; with
                no generator, the query's embedding is the single rationale).
            passage_embeddings: ``(N, d)`` embeddings of the candidates, row ``i`` for
                ``passages[i]``. Neither input needs to be normalised.
            passages: the ``N`` candidates (:class:`meteora.types.Passage`, unique ids).
            rationales: optional rationale texts, one per row, shown in the explanation.
            query: optional query, stored on the returned ranking.
            context: optional extra passages that expansion may add besides the
                candidates — typically the other chunks of the candidates' documents
                (e.g. ``retriever.passages``). They are never scored or ranked: an
                expansion-added context passage comes after the scored selection (order
                ``"score"``) or at its place in its document (order ``"document"``).
            evidence: optional ``(N,)`` evidence logits from an evidence scorer, one per
                candidate (only their differences inside a document matter): the
                score becomes document relevance + weighted evidence gap, and the
                pooled cut a band below the best score (see the module doc).

        Returns:
            A :class:`SelectionResult`; ``N = 0`` gives an empty one.

        Raises:
            InvalidInputError: shape or dimension mismatch, NaN/inf, non-numeric
                dtype, zero-norm rows, duplicate ids, ``len(rationales) != R``.

        Example:
            >>> from meteora.types import to_passages
            >>> ps = to_passages([{"text": t, "id": f"d1-{i}", "doc_id": "d1", "position": i} for i, t in enumerate("abc")])
            >>> res = EvidenceSelector(window=1).select(np.eye(3)[:1], np.eye(3), ps)
            >>> res.selected_ids, res.explanation.expansion_added
            (['d1-0', 'd1-1'], ['d1-1'])
        """
        r, c, plist, texts = self._validate(rationale_embeddings, passage_embeddings, passages, rationales)
        ids = [p.id for p in plist]
        n = len(plist)
        sim = r @ c.T  # (R, N) cosine similarities

        # pooled similarity: cos(mean r, c); when the mean vanishes (opposed rationales)
        # the mean of the similarities gives the same order.
        pooled_vec = r.mean(axis=0)
        norm = float(np.linalg.norm(pooled_vec))
        if norm > _NORM_EPS:
            pooled = c @ (pooled_vec / norm)
        else:
            logger.warning("the rationale embeddings average to ~0; using the mean similarity as the pooled score")
            pooled = sim.mean(axis=0) if n else np.zeros(0)
        pooled = np.clip(pooled, -1.0, 1.0)
        logits = _check_evidence(evidence, n)

        # relevance floors: which (rationale, chunk) pairs and which chunks may be selected
        band: np.ndarray | None = None
        if logits is not None:
            global_score = _document_evidence_score(pooled, logits, [p.doc_id for p in plist], self.evidence_weight)
            ok = global_score >= self.min_similarity if self.min_similarity is not None else np.ones(n, dtype=bool)
            if n:
                ok = ok & (global_score >= global_score.max() - self.evidence_band - 1e-12)
            band = ok
            allowed = np.broadcast_to(ok, sim.shape)
        else:
            floor = self.min_similarity
            allowed = sim >= floor if floor is not None else np.ones(sim.shape, dtype=bool)
            ok = pooled >= floor if floor is not None else np.ones(n, dtype=bool)
            global_score = pooled

        pairs: list[RationalePair] = []
        unpaired: list[int] = []
        pair_best: dict[int, float] = {}
        pair_sel: list[int] = []
        if self.use_pairing and n:
            pairs, unpaired, pair_best, pair_sel = self._pair(sim, texts, ids, allowed)

        pooled_order_idx = np.argsort(-global_score, kind="stable") if n else np.zeros(0, dtype=int)
        pooled_sorted = global_score[pooled_order_idx]
        elbow: ElbowInfo | None = None
        pool_sel: list[int] = []
        below_floor: list[str] = []
        if self.use_pooling and band is not None:
            pool_sel = [int(i) for i in pooled_order_idx if band[int(i)]]
        elif self.use_pooling:
            elbow = elbow_cutoff(pooled_sorted, self.tau)
            pool_sel = [int(i) for i in pooled_order_idx[: elbow.keep] if ok[int(i)]]
            below_floor = [ids[int(i)] for i in pooled_order_idx[: elbow.keep] if not ok[int(i)]]

        if logits is not None:
            final = global_score.astype(np.float64).copy()
        else:
            final = pooled.copy()
            for i, s in pair_best.items():
                final[i] = max(final[i], s)

        sources: dict[str, set[str]] = {}
        union: list[int] = []
        for i in pair_sel:
            sources.setdefault(ids[i], set()).add("pairing")
            if i not in union:
                union.append(i)
        for i in pool_sel:
            sources.setdefault(ids[i], set()).add("pooling")
            if i not in union:
                union.append(i)
        allp = plist
        if context and self.window > 0:
            known = set(ids)
            extra = []
            for p in context:
                if not isinstance(p, Passage):
                    raise InvalidInputError(f"context items must be meteora.Passage objects, got {type(p).__name__}")
                if p.id not in known:
                    known.add(p.id)
                    extra.append(p)
            allp = plist + extra
        expanded = self._expand(union, allp)
        for i in expanded:
            sources.setdefault(allp[i].id, set()).add("expansion")
        chosen = union + expanded

        def sort_key(i: int) -> tuple[float, int]:
            # context passages (i >= n) have no score: after every scored passage
            return (-final[i], i) if i < n else (np.inf, i)

        if self.order == "score":
            chosen.sort(key=sort_key)
        else:
            by_score = sorted(chosen, key=sort_key)
            doc_rank: dict[str, int] = {}
            for i in by_score:
                doc_rank.setdefault(allp[i].doc_id, len(doc_rank))
            chosen.sort(key=lambda i: (doc_rank[allp[i].doc_id], allp[i].position, i))

        ranking = Ranking.from_scores(plist, [float(x) for x in final], query=query)
        scores = {
            ids[i]: ChunkScore(
                pooled=float(pooled[i]),
                pairing=float(pair_best[i]) if i in pair_best else None,
                score=float(final[i]),
                evidence=float(logits[i]) if logits is not None else None,
            )
            for i in range(n)
        }
        explanation = SelectionExplanation(
            pairs=pairs,
            unpaired_rationales=unpaired,
            pooled_order=[ids[int(i)] for i in pooled_order_idx],
            pooled_scores=[float(x) for x in pooled_sorted],
            elbow=elbow,
            sources=sources,
            expansion_added=[allp[i].id for i in expanded],
            pairing_mode=self.pairing if self.use_pairing else None,
            window=self.window,
            tau=self.tau,
            order=self.order,
            min_similarity=self.min_similarity,
            evidence_band=self.evidence_band if logits is not None else None,
            evidence_weight=self.evidence_weight if logits is not None else None,
            below_floor=below_floor,
        )
        result = SelectionResult([allp[i] for i in chosen], ranking, scores, explanation)
        logger.debug("selection: %d of %d candidates (%d from expansion)", len(chosen), n, len(expanded))
        return result
