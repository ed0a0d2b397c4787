"""What the evidence selector returns: the selection, the ranking and the reasons.

:class:`SelectionResult` holds the selected passages, the ranking of every candidate,
each candidate's :class:`ChunkScore` and a :class:`SelectionExplanation` (the
:class:`RationalePair` decisions, the elbow, which stage selected which chunk).

Example:
    >>> import numpy as np
    >>> from meteora.selection.selector import EvidenceSelector
    >>> from meteora.types import to_passages
    >>> from meteora.selection.selector_settings import SelectorSettings
    >>> res = EvidenceSelector(SelectorSettings(cut="elbow")).select(np.eye(2)[:1], np.eye(2), to_passages(["fever", "cats"]))
    >>> res
    SelectionResult(1 of 2 selected: [0])
    >>> res.scores["0"].to_dict()
    {'pooled': 1.0, 'pairing': 1.0, 'score': 1.0}
    >>> res.explanation.pairs
    [RationalePair(rationale_index=0, passage_id='0', similarity=1.0, rationale=None)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meteora.selection.elbow import ElbowInfo
from meteora.types import Passage, Ranking

__all__ = ["RationalePair", "ChunkScore", "SelectionExplanation", "SelectionResult"]


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
        score: the ranking score: with the learned cut (default) P(relevant), else
            ``max(pooled, pairing)``, or with the band the document relevance plus the
            weighted evidence-logit gap (see :mod:`meteora.selection`).
        evidence: the evidence scorer's logit, or ``None`` when the scorer did not read
            this candidate (or there is none).
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
        cut: the cut that decided (``"learned"``, ``"band"``, ``"elbow"``, ``"custom"``);
            with the learned cut ``pooled_order`` / ``pooled_scores`` are the candidates by
            P(relevant).
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
    cut: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cut": self.cut,
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
        if ex.cut == "learned":
            kept_ids = [pid for pid in ex.pooled_order if "pooling" in ex.sources.get(pid, ())]
            lines.append(
                f"Cut (learned): keeps the top {len(kept_ids)} by P(relevant), the count with the best expected F1: "
                + ", ".join(f"{pid} (P {s:.3f})" for pid, s in zip(ex.pooled_order, ex.pooled_scores, strict=False)
                            if pid in kept_ids)
            )
        elif ex.elbow is not None:
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
        if ex.min_similarity is not None and ex.cut != "learned":
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
                sc = self.scores.get(p.id)
                # a neighbour expansion took from the document context is not a candidate: no score
                score = f"score {sc.score:.3f}" if sc is not None else "context, unscored"
                src = ", ".join(sorted(ex.sources.get(p.id, ())))
                lines.append(f"  {i}. {p.id} (doc {p.doc_id}, pos {p.position}) {score} [{src}] {_short(p.text)!r}")
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
