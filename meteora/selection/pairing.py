"""The pairing stage: each rationale, in order, takes one candidate.

``"distinct"`` pairing masks candidates an earlier rationale took, so each rationale
adds a new chunk (the paper's experiments); ``"convergent"`` is a plain argmax, several
rationales may choose one chunk. A rationale never takes a candidate it is not allowed
(below the relevance floor, or outside the cut's band: :func:`pairing_allowed`); when
nothing is left it stays unpaired. A chunk's *pairing score* is the largest cosine
among the rationales that chose it.

Example:
    >>> import numpy as np
    >>> sim = np.array([[0.9, 0.8], [0.9, 0.1]])
    >>> p = pair_rationales(sim, np.ones_like(sim, dtype=bool), "distinct", ["a", "b"])
    >>> [(x.rationale_index, x.passage_id) for x in p.pairs], p.best
    ([(0, 'a'), (1, 'b')], {0: 0.9, 1: 0.1})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from meteora.selection.cuts import relevance_floor
from meteora.selection.results import RationalePair

__all__ = ["Pairing", "pair_rationales", "pairing_allowed"]


@dataclass(frozen=True)
class Pairing:
    """What pairing decided.

    Attributes:
        pairs: the decisions, in rationale order.
        unpaired: rationales that chose nothing.
        best: candidate index -> its pairing score.
        chosen: the chosen candidate indices, in rationale order (repeats possible
            with convergent pairing).
    """

    pairs: list[RationalePair]
    unpaired: list[int]
    best: dict[int, float]
    chosen: list[int]

    @classmethod
    def empty(cls) -> Pairing:
        return cls([], [], {}, [])


def pairing_allowed(sim: np.ndarray, floor: float | None, eligible: np.ndarray | None) -> np.ndarray:
    """``(R, N)`` mask of the (rationale, candidate) pairs pairing may make: the cut's
    ``eligible`` candidates when it restricts them, else the pairs whose cosine clears
    the relevance ``floor``."""
    if eligible is not None:
        return np.broadcast_to(eligible, sim.shape)
    return relevance_floor(sim, floor)


def pair_rationales(
    sim: np.ndarray,
    allowed: np.ndarray,
    mode: str,
    ids: Sequence[str],
    texts: Sequence[str] | None = None,
) -> Pairing:
    """Pair each rationale (row of ``sim``) with a candidate (column).

    Args:
        sim: ``(R, N)`` rationale-candidate cosines.
        allowed: ``(R, N)`` mask of the pairs that may be made.
        mode: ``"distinct"`` or ``"convergent"``.
        ids: the candidates' ids.
        texts: the rationale texts (for the explanation), or ``None``.
    """
    chosen: list[int] = []
    pairs: list[RationalePair] = []
    unpaired: list[int] = []
    best: dict[int, float] = {}
    taken = np.zeros(sim.shape[1], dtype=bool)
    for j in range(sim.shape[0]):
        blocked = ~allowed[j]
        if mode == "distinct":
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
    return Pairing(pairs, unpaired, best, chosen)
