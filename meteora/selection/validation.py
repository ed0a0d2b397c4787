"""Argument checks of the selection stages: settings values and the selector's inputs.

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
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.types import Passage

__all__ = ["NORM_EPS", "check_floor", "check_tau", "check_evidence", "check_inputs", "as_matrix", "normalise_rows"]

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


def check_inputs(
    rationale_embeddings: Any,
    passage_embeddings: Any,
    passages: Sequence[Passage],
    rationales: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, list[Passage], list[str] | None]:
    """The selector's inputs checked: unit-normalised ``(R, d)`` rationale and ``(N, d)``
    candidate embeddings, the passages as a list (unique ids) and the rationale texts.

    Raises:
        InvalidInputError: shape or dimension mismatch, NaN/inf, non-numeric dtype,
            zero-norm rows, duplicate ids, ``len(rationales) != R``.

    Example:
        >>> from meteora.types import to_passages
        >>> r, c, ps, texts = check_inputs([[3.0, 4.0]], [[1.0, 0.0]], to_passages(["a"]), None)
        >>> r.tolist(), len(ps), texts
        ([[0.6, 0.8]], 1, None)
    """
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
    r = as_matrix(rationale_embeddings, "rationale_embeddings")
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
    c = as_matrix(passage_embeddings, "passage_embeddings")
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
    return normalise_rows(r, "rationale_embeddings"), (
        normalise_rows(c, "passage_embeddings") if n else c
    ), plist, texts
