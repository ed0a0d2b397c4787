"""The pooled elbow: METEORA's adaptive cutoff of a descending score list.

:func:`elbow_cutoff` decides how many of the top pooled scores to keep, by the first
gap whose z-score exceeds ``tau`` or, failing that, the largest second difference;
:class:`ElbowInfo` records where and why it cut.

Example:
    >>> import numpy as np
    >>> info = elbow_cutoff(np.array([0.9, 0.5, 0.45, 0.4]))
    >>> info.keep, info.rule
    (1, 'zscore')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.selection.validation import check_tau

__all__ = ["ElbowInfo", "elbow_cutoff", "STD_EPS", "TIE_EPS", "Z_EPS"]

#: A population standard deviation of the gaps at or below this counts as zero: the gaps
#: are equal up to floating-point noise, so their z-scores would be meaningless.
STD_EPS = 1e-9
#: Second differences within this of the maximum count as tied (the first one wins).
TIE_EPS = 1e-9
#: A z-score must exceed ``tau`` by more than this to pass: z-scores that equal ``tau``
#: up to rounding (two gaps always give exactly ±1, computed as 1.0000000002) do not.
Z_EPS = 1e-9


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
    tau = check_tau(tau)
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
