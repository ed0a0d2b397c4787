"""``relevance_score``: a candidate's ranking score mapped into [0, 1].

Rerank APIs (Cohere's, and the LangChain / LlamaIndex rerankers built on them) promise
a ``relevance_score`` between 0 and 1. METEORA's own score (``Hit.score`` in
``result.ranked``) is on the cosine scale: about -1 to 1, lower still when the evidence
scorer subtracts its gap (see :class:`~meteora.reranker.Reranker`). :func:`relevance_score`
is the one place that turns one into the other, everywhere a ``relevance_score`` is
given (the HTTP service, the framework integrations, :meth:`Reranker.rank
<meteora.reranker.Reranker.rank>`); the raw score is always kept beside it, under its
own key (``score`` / ``meteora_score``).

The map is ``(1 + score) / 2``, clipped to [0, 1]: monotone (a higher score never gets a
lower relevance, so the order is the ranking's), 1 for a cosine of 1, 0.5 for an
orthogonal passage, 0 at -1 and below. It is a rescaling, not a probability: compare
relevances within one query, or calibrate a threshold on your own data.

Example:
    >>> relevance_score(1.0), relevance_score(0.0), relevance_score(-1.7)
    (1.0, 0.5, 0.0)
"""

from __future__ import annotations

import math

__all__ = ["relevance_score"]


def relevance_score(score: float) -> float:
    """``score`` (the cosine scale) mapped monotonically into [0, 1]: ``(1 + score) / 2``,
    clipped; NaN stays NaN.

    Example:
        >>> relevance_score(0.6)
        0.8
    """
    value = float(score)
    if math.isnan(value):
        return value
    return min(1.0, max(0.0, (1.0 + value) / 2.0))
