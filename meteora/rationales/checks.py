"""Argument checks of the rationale generator's sampling parameters (counts are checked
by :func:`meteora._checks.positive_int`).

Shared by :class:`~meteora.rationales.generator.RationaleGenerator` (construction,
``generate``) and its ``complete``; a bad value raises
:class:`~meteora.errors.InvalidInputError` that names the argument.

Example:
    >>> check_sampling(do_sample=True, temperature=0.7, top_p=0.95, seed=None)
"""

from __future__ import annotations

from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["check_sampling"]


def check_sampling(*, do_sample: bool, temperature: Any, top_p: Any, seed: Any) -> None:
    """Check ``generate``'s sampling arguments (temperature and top_p only when sampling)."""
    if do_sample:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or temperature <= 0
        ):
            raise InvalidInputError(
                f"temperature must be a positive number, got {temperature!r}"
            )
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {top_p!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidInputError(f"seed must be an integer or None, got {seed!r}")
