"""Argument checks shared by the evidence selector and the elbow cutoff.

Each check turns a caller's value into the type the selection maths needs, or raises
:class:`~meteora.errors.InvalidInputError` with a message that says what to give instead.

Example:
    >>> check_floor(0.2, "min_similarity", -1.0, 1.0)
    0.2
    >>> normalise_rows(as_matrix([[3, 4]], "x"), "x").tolist()
    [[0.6, 0.8]]
    >>> check_tau(float("nan"))
    Traceback (most recent call last):
    ...
    meteora.errors.InvalidInputError: tau must be a finite number (the z-score threshold, default 1.0), got nan
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError

__all__ = ["NORM_EPS", "check_floor", "check_tau", "check_evidence", "as_matrix", "normalise_rows"]

#: A vector whose norm is at or below this counts as zero (its direction is undefined).
NORM_EPS = 1e-12


def check_floor(value: Any, name: str, low: float, high: float) -> float | None:
    """``value`` as a float in ``[low, high]``, or ``None`` (the floor or knob is off)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a number in [{low}, {high}] or None, got {value!r}")
    if not low <= float(value) <= high:
        raise InvalidInputError(f"{name} must be in [{low}, {high}] (or None to disable it), got {value!r}")
    return float(value)


def check_evidence(evidence: Any, n: int) -> np.ndarray | None:
    """The evidence scorer's logits as a finite ``(n,)`` float array, or ``None``."""
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


def check_tau(tau: Any) -> float:
    """The elbow's z-score threshold as a finite float."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not math.isfinite(tau):
        raise InvalidInputError(f"tau must be a finite number (the z-score threshold, default 1.0), got {tau!r}")
    return float(tau)


def as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 array of real numbers (any shape; the caller checks it)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything array-like may fail here
        raise InvalidInputError(f"{name} must be a numeric array: {exc}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{name} must hold real numbers (float), got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def normalise_rows(arr: np.ndarray, name: str) -> np.ndarray:
    """The rows of ``arr`` scaled to unit L2 norm; zero rows are refused."""
    norms = np.linalg.norm(arr, axis=1)
    bad = np.flatnonzero(norms <= NORM_EPS)
    if bad.size:
        raise InvalidInputError(
            f"{name} row(s) {bad[:5].tolist()} have zero norm, so their cosine similarity is undefined; "
            "check the encoder output for those texts"
        )
    return arr / norms[:, None]
