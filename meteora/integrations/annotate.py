"""Per-passage notes on a :class:`~meteora.reranker.RerankResult`: score, rank, whether
it was selected, and why.

The framework integrations (:mod:`meteora.integrations.langchain`,
:mod:`meteora.integrations.llamaindex`) and the HTTP service (:mod:`meteora.server`)
all hand a selection back to someone else's data model; this module is the one place
that turns a result into what they attach to each document: its ``relevance_score``
(the ranking score mapped into [0, 1] by :func:`meteora.relevance.relevance_score`)
beside the raw score (cosine scale), its 1-based rank, the selection flag, a readable
reason, and the rationales that chose it. It also holds :func:`pick`, the one
definition of the integrations' ``mode="select"|"rank"`` and ``top_n`` options.

Example:
    >>> from meteora.types import Passage, Ranking
    >>> from meteora.selection import SelectionExplanation, SelectionResult
    >>> ps = [Passage("aspirin", id="0"), Passage("dogs", id="1")]
    >>> ex = SelectionExplanation([], [], ["0", "1"], [0.9, 0.1], None, {"0": {"pooling"}}, [],
    ...                           None, 0, 1.0, "score")
    >>> ranking = Ranking.from_scores(ps, [0.9, 0.1])
    >>> from meteora.reranker import RerankResult
    >>> res = RerankResult("q", [ps[0]], ranking, ["q"], None, SelectionResult([ps[0]], ranking, {}, ex))
    >>> notes = passage_notes(res)
    >>> notes["0"].selected, notes["0"].rank, notes["1"].reason
    (True, 1, 'not selected: below the cut')
    >>> [n.passage.id for n in pick(res, mode="rank", top_n=None)]
    ['0', '1']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meteora.errors import InvalidInputError
from meteora.relevance import relevance_score
from meteora.types import Passage

__all__ = ["PassageNote", "passage_notes", "pick", "check_mode", "check_top_n", "MODES"]

#: The integrations' modes: ``"select"`` returns METEORA's selected set (adaptive
#: count), ``"rank"`` every candidate best first (a plain reranker's view).
MODES = ("select", "rank")

_STAGE_WORDS = {
    "pairing": "a rationale chose it (pairing)",
    "pooling": "within the evidence band of the best passage (pooling)",
    "expansion": "a neighbour of a selected passage (expansion)",
}


@dataclass(frozen=True)
class PassageNote:
    """What a result says about one candidate.

    Attributes:
        passage: the candidate.
        score: its ranking score (on ``score_scale``; see :class:`~meteora.reranker.Reranker`);
            :attr:`relevance` is it in [0, 1].
        rank: 1-based rank in the full ranking.
        selected: in the final selection (after verification and ``top_k``).
        reason: one readable sentence: which stages selected it, or why not.
        chosen_by: the rationales that paired with it (may be empty).
        score_scale: ``"probability"`` (the learned cut) or ``"cosine"``.
    """

    passage: Passage
    score: float
    rank: int
    selected: bool
    reason: str
    chosen_by: tuple[str, ...] = field(default=())
    score_scale: str = "cosine"

    @property
    def relevance(self) -> float:
        """The score mapped into [0, 1] (:func:`meteora.relevance.relevance_score`)."""
        return relevance_score(self.score, self.score_scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (without the passage)."""
        return {
            "relevance_score": self.relevance,
            "score": self.score,
            "rank": self.rank,
            "selected": self.selected,
            "reason": self.reason,
            "chosen_by": list(self.chosen_by),
        }


#: why a candidate no stage kept was left out, by the cut that decided
_CUT_REASONS = {
    "learned": "not selected: below the learned cut (its expected-F1 count)",
    "band": "not selected: outside the evidence band",
    "elbow": "not selected: below the elbow",
}


def passage_notes(result: Any) -> dict[str, PassageNote]:
    """One :class:`PassageNote` per candidate of ``result``, keyed by passage id."""
    selected = set(result.selected_ids)
    ex = result.selection.explanation
    below = set(ex.below_floor)
    rejected: dict[str, str] = {}
    if result.verification is not None:
        for p, verdict in result.verification.rejected:
            rejected[p.id] = ", ".join(verdict.flag_types) or verdict.reason or "flagged"
    restored = set(getattr(result.verification, "restored", None) or ())
    chosen: dict[str, list[str]] = {}
    for pair in ex.pairs:
        text = pair.rationale
        if text is None and 0 <= pair.rationale_index < len(result.rationales):
            text = result.rationales[pair.rationale_index]
        chosen.setdefault(pair.passage_id, []).append(text or f"rationale {pair.rationale_index}")
    notes: dict[str, PassageNote] = {}
    for hit in result.ranked:
        pid = hit.id
        stages = ex.sources.get(pid, set())
        if pid in restored:
            reason = "selected: restored by the verifier after it dropped a suspicious document"
        elif pid in selected:
            reason = "selected: " + "; ".join(_STAGE_WORDS.get(s, s) for s in sorted(stages)) if stages else "selected"
        elif pid in rejected:
            reason = f"not selected: the verifier dropped it ({rejected[pid]})"
        elif stages:
            reason = "not selected: cut by top_k"
        elif pid in below:
            reason = "not selected: below the relevance floor"
        else:
            reason = _CUT_REASONS.get(ex.cut, "not selected: below the cut")
        notes[pid] = PassageNote(hit.passage, float(hit.score), int(hit.rank), pid in selected, reason,
                                 tuple(chosen.get(pid, ())), result.score_scale)
    return notes


def check_mode(mode: Any) -> str:
    """Validate an integration's ``mode`` (``"select"`` or ``"rank"``)."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return mode


def check_top_n(top_n: Any) -> int | None:
    """Validate ``top_n``: a positive integer or ``None`` (no cap)."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive integer or None, got {top_n!r}")
    return top_n


def pick(result: Any, *, mode: str, top_n: int | None) -> list[PassageNote]:
    """The notes to hand back, in order: the selection (``mode="select"``, in the
    reranker's order) or every candidate best first (``"rank"``), at most ``top_n``."""
    check_mode(mode)
    check_top_n(top_n)
    notes = passage_notes(result)
    ids = result.selected_ids if mode == "select" else result.ranked.ids
    out = [notes[pid] for pid in ids]
    return out[:top_n] if top_n is not None else out


def metadata_for(note: PassageNote, rationales: list[str], conflicts: Sequence[Any] = ()) -> Mapping[str, Any]:
    """The metadata keys the integrations add to a returned document.

    ``relevance_score`` (the name LangChain's and LlamaIndex's rerankers use; in [0, 1],
    :func:`meteora.relevance.relevance_score`), ``meteora_score`` (the raw ranking score,
    on the result's ``score_scale``), ``meteora_rank``, ``meteora_selected``,
    ``meteora_reason``, ``meteora_chosen_by`` (rationales that paired with it),
    ``meteora_rationales`` (all the query's) and ``meteora_conflicts``: the result's
    conflicts (:class:`~meteora.conflicts.Conflict` dicts: the ids on each side — the
    integrations' ids are the documents' indices in the list given — what was kept and
    dropped, and why) that name this document.
    """
    return {
        "relevance_score": note.relevance,
        "meteora_score": note.score,
        "meteora_rank": note.rank,
        "meteora_selected": note.selected,
        "meteora_reason": note.reason,
        "meteora_chosen_by": list(note.chosen_by),
        "meteora_rationales": list(rationales),
        "meteora_conflicts": [c.to_dict() for c in conflicts
                              if any(note.passage.id in ids for ids in c.sides.values())],
    }


#: The metadata keys :func:`metadata_for` adds.
METADATA_KEYS = tuple(metadata_for(PassageNote(Passage("x", id="x"), 0.0, 1, False, ""), []))
