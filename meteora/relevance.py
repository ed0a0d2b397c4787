"""``relevance_score``: a candidate's ranking score mapped into [0, 1].

Rerank APIs (Cohere's, and the LangChain / LlamaIndex rerankers built on them) promise
a ``relevance_score`` between 0 and 1. METEORA's own score (``Hit.score`` in
``result.ranked``) is on the scale of the cut that ranked it (``result.score_scale``):
with the learned cut (the default) it is already P(relevant) in [0, 1], kept as it is;
with ``cut="band"`` / ``"elbow"`` it is on the cosine scale, about -1 to 1 (lower still
when the evidence scorer subtracts its gap). :func:`relevance_score` is the one place
that turns a score into a relevance, everywhere a ``relevance_score`` is given (the HTTP
service, the framework integrations, :meth:`Reranker.rank
<meteora.reranker.Reranker.rank>`); the raw score is always kept beside it, under its
own key (``score`` / ``meteora_score``).

On the cosine scale the map is ``(1 + score) / 2``, clipped to [0, 1]: monotone (a
higher score never gets a lower relevance, so the order is the ranking's), 1 for a
cosine of 1, 0.5 for an orthogonal passage, 0 at -1 and below. That is a rescaling, not
a probability: compare relevances within one query, or calibrate a threshold on your
own data.

Example:
    >>> relevance_score(1.0), relevance_score(0.0), relevance_score(-1.7)
    (1.0, 0.5, 0.0)
    >>> relevance_score(0.25, "probability")
    0.25
"""

from __future__ import annotations

import math

from meteora.errors import InvalidInputError

__all__ = ["relevance_score", "SCORE_SCALES"]


#: the score scales a cut ranks by
SCORE_SCALES = ("cosine", "probability")


def relevance_score(score: float, scale: str = "cosine") -> float:
    """``score`` mapped monotonically into [0, 1]: on the ``"cosine"`` scale
    ``(1 + score) / 2``, a ``"probability"`` as it is; clipped, NaN stays NaN.

    Example:
        >>> relevance_score(0.6)
        0.8
        >>> relevance_score(0.6, scale="probability")
        0.6
    """
    if scale not in SCORE_SCALES:
        raise InvalidInputError(f"scale must be one of {SCORE_SCALES}, got {scale!r}")
    value = float(score)
    if math.isnan(value):
        return value
    if scale == "cosine":
        value = (1.0 + value) / 2.0
    return min(1.0, max(0.0, value))
