"""Former home of the METEORA benchmark methods; they now live in the explicit registry
:mod:`meteora.bench.methods` (nothing registers itself on import any more).

Kept so that existing imports keep working; new code imports :mod:`meteora.bench.methods`.

Example:
    >>> resolve_meteora_method("meteora-w2") is not None
    True
"""

from __future__ import annotations

from collections.abc import Callable

from meteora.bench.context import BenchmarkContext, MethodOutput
from meteora.bench.methods import METEORA_VARIANTS as VARIANTS
from meteora.bench.methods import meteora_runner

__all__ = ["VARIANTS", "meteora_runner", "resolve_meteora_method"]


def resolve_meteora_method(name: str) -> Callable[[BenchmarkContext], MethodOutput] | None:
    """The runner for ``name`` if it is a METEORA method, else ``None``."""
    try:
        return meteora_runner(name)
    except KeyError:
        return None
