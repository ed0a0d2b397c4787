"""The benchmark's method names and what each METEORA name means, without their runners.

A name is a retrieval method (:data:`RETRIEVAL_METHODS`) or a METEORA variant
(:data:`METEORA_VARIANTS`), the latter optionally with a ``-wN`` window suffix. The
settings (:mod:`meteora.bench.config`) check names here; the runners of the names live
in :mod:`meteora.bench.methods`.

Example:
    >>> is_method("meteora-query-only-w2"), is_method("bm25"), is_method("colbert")
    (True, True, False)
    >>> parse_meteora_method("meteora-pairing-w1")[1]
    1
    >>> meteora_settings("meteora-pairing-w1").to_dict()["use_pooling"]
    False
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meteora.selection.selector_settings import SelectorSettings

__all__ = [
    "RETRIEVAL_METHODS",
    "METEORA_VARIANTS",
    "MeteoraVariant",
    "available_methods",
    "is_method",
    "meteora_settings",
    "parse_meteora_method",
]

RETRIEVAL_METHODS = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class MeteoraVariant:
    """A METEORA benchmark method: whether it uses the LM, the evidence scorer and the
    default poison defence (``Reranker``'s default verifier), and which selector fields
    it fixes (``None``: taken from the run's settings)."""

    uses_lm: bool
    uses_scorer: bool = True
    defence: bool = True
    use_pairing: bool | None = None
    use_pooling: bool | None = None
    window: int | None = None
    cut: str | None = None

    def settings(self, base: SelectorSettings, window: int | None = None) -> SelectorSettings:
        """``base`` with this variant's fields (and a ``-wN`` window) applied."""
        changes: dict[str, Any] = {}
        if self.use_pairing is not None:
            changes["use_pairing"] = self.use_pairing
        if self.use_pooling is not None:
            changes["use_pooling"] = self.use_pooling
        if self.cut is not None:
            changes["cut"] = self.cut
        w = window if window is not None else self.window
        if w is not None:
            changes["window"] = w
        return base.replace(**changes) if changes else base


METEORA_VARIANTS: Mapping[str, MeteoraVariant] = types.MappingProxyType(
    {
        "meteora": MeteoraVariant(uses_lm=True),
        "meteora-no-scorer": MeteoraVariant(uses_lm=True, uses_scorer=False),
        "meteora-no-expansion": MeteoraVariant(uses_lm=True, window=0),
        "meteora-pairing": MeteoraVariant(uses_lm=True, use_pairing=True, use_pooling=False),
        "meteora-pooling": MeteoraVariant(uses_lm=True, use_pairing=False, use_pooling=True),
        "meteora-query-only": MeteoraVariant(uses_lm=False),
        "meteora-query-only-no-scorer": MeteoraVariant(uses_lm=False, uses_scorer=False),
        "meteora-no-defence": MeteoraVariant(uses_lm=True, defence=False),
        "meteora-query-only-no-defence": MeteoraVariant(uses_lm=False, defence=False),
        # the previous cuts, for ablation: the evidence band (the last release's default) and the elbow
        "meteora-band": MeteoraVariant(uses_lm=True, cut="band"),
        "meteora-elbow": MeteoraVariant(uses_lm=True, uses_scorer=False, cut="elbow"),
        "meteora-query-only-band": MeteoraVariant(uses_lm=False, cut="band"),
    }
)
_WINDOW_SUFFIX = re.compile(r"^(?P<base>meteora[a-z-]*?)-w(?P<w>\d+)$")


def parse_meteora_method(name: str) -> tuple[MeteoraVariant, int | None] | None:
    """``(variant, window from a -wN suffix or None)`` for a METEORA method name, else ``None``."""
    m = _WINDOW_SUFFIX.match(name)
    base, window = (m.group("base"), int(m.group("w"))) if m else (name, None)
    variant = METEORA_VARIANTS.get(base)
    return None if variant is None else (variant, window)


def meteora_settings(name: str, base: SelectorSettings | None = None) -> SelectorSettings:
    """The selector settings of METEORA method ``name`` on top of ``base`` (default
    ``SelectorSettings()``).

    Raises:
        KeyError: ``name`` is not a METEORA method.
    """
    parsed = parse_meteora_method(name)
    if parsed is None:
        raise KeyError(name)
    variant, window = parsed
    return variant.settings(base if base is not None else SelectorSettings(), window)


def is_method(name: str) -> bool:
    """Whether ``name`` is a benchmark method: a retrieval method, or a METEORA one
    (with or without a ``-wN`` suffix). Exactly the names that have a runner."""
    return name in RETRIEVAL_METHODS or parse_meteora_method(name) is not None


def available_methods() -> list[str]:
    """Sorted method names (METEORA methods also accept a ``-wN`` window suffix)."""
    return sorted((*RETRIEVAL_METHODS, *METEORA_VARIANTS))
