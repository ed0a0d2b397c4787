"""Ordering: the score every candidate is ranked by, and the order of the selection.

:func:`final_scores` is the cut's own score when it has one (:class:`EvidenceBand`),
else ``max(pooled cosine, pairing score)``; :func:`order_selection` sorts the selected
chunks by that score (``"score"``) or by document, then position (``"document"``:
documents in the order their best chunk ranks). Context passages added by expansion have
no score: after every scored chunk (``"score"``) or at their place in their document.

Example:
    >>> import numpy as np
    >>> final_scores(np.array([0.2, 0.5]), {0: 0.9}, None).tolist()
    [0.9, 0.5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from meteora.types import Passage

__all__ = ["final_scores", "order_selection"]


def final_scores(pooled: np.ndarray, pairing_best: Mapping[int, float], cut_scores: np.ndarray | None) -> np.ndarray:
    """``(N,)`` ranking scores: the cut's, or the pooled cosine raised to the pairing score."""
    if cut_scores is not None:
        return cut_scores
    final = pooled.copy()
    for i, s in pairing_best.items():
        final[i] = max(final[i], s)
    return final


def order_selection(chosen: Sequence[int], final: np.ndarray, passages: Sequence[Passage], order: str) -> list[int]:
    """``chosen`` (indices into ``passages``, whose first ``len(final)`` are the scored
    candidates) in ``order``: ``"score"`` or ``"document"``."""
    n = len(final)

    def by_score(i: int) -> tuple[float, int]:
        # context passages (i >= n) have no score: after every scored passage
        return (-final[i], i) if i < n else (np.inf, i)

    if order == "score":
        return sorted(chosen, key=by_score)
    doc_rank: dict[str, int] = {}
    for i in sorted(chosen, key=by_score):
        doc_rank.setdefault(passages[i].doc_id, len(doc_rank))
    return sorted(chosen, key=lambda i: (doc_rank[passages[i].doc_id], passages[i].position, i))
