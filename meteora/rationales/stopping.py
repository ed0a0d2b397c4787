"""When to stop generating rationales for a row, before EOS or ``max_new_tokens``.

A model that never emits EOS (the okoene adapter) would otherwise write until
``max_new_tokens``. :class:`EnoughRationales` is the text check a backend that stops on
text (the transformers one) consults as a row grows: it ends the row as soon as its
complete lines hold ``n`` usable rationales, or the model starts a new ``### ...``
prompt section (which the parser ignores anyway). Backends that cannot stop on text get
:data:`SECTION_STOPS` as stop strings instead.

Example:
    >>> bool(SECTION_START.search("1. Mortality.\\n### Query:"))
    True
    >>> last_close_tag_end("<rationale_1>a</rationale_1> <rationale_2>b")
    28
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EnoughRationales", "SECTION_START", "SECTION_STOPS", "last_close_tag_end"]


class EnoughRationales:
    """Text check for :meth:`meteora.lm.base.CausalLM.generate`'s ``until``: row ``i`` is
    done once its complete lines hold ``n`` usable rationales, or it starts a new
    ``### ...`` section (which the parser ignores).

    ``generator`` is the :class:`~meteora.rationales.generator.RationaleGenerator` that
    generates (its ``_usable`` counts the rationales that parsing and filtering would
    keep); ``queries[i]`` is row ``i``'s query.

    Example:
        >>> class G:
        ...     def _usable(self, query, text, n, filt):
        ...         return text.split()
        >>> stop = EnoughRationales(G(), ["q"], n=2, filt=True)
        >>> stop(0, "one"), stop(0, "one\\ntwo\\n")
        (False, True)
    """

    def __init__(self, generator: Any, queries: list[str], n: int, filt: bool) -> None:
        self.generator = generator
        self.queries = queries
        self.n = n
        self.filter = filt
        self.done = [False] * len(queries)
        self.checked_upto = [0] * len(queries)

    def __call__(self, row: int, text: str) -> bool:
        if self.done[row]:
            return True
        if SECTION_START.search(text):
            # the model started a new "### ..." section: the parser ignores the rest
            self.done[row] = True
            return True
        cut = max(text.rfind("\n"), last_close_tag_end(text) - 1)
        if cut <= self.checked_upto[row]:
            return False
        self.checked_upto[row] = cut
        usable = self.generator._usable(self.queries[row], text[: cut + 1], self.n, self.filter)
        self.done[row] = len(usable) >= self.n
        return self.done[row]


SECTION_START = re.compile(r"(?:^|\n)\s*###")
#: stop strings with the same purpose, for backends without stopping criteria
SECTION_STOPS = ("\n###",)
_CLOSE_TAG = re.compile(r"</\s*rationale[^>]*>", re.IGNORECASE)


def last_close_tag_end(text: str) -> int:
    """Where the last ``</rationale...>`` tag of ``text`` ends (0 when there is none)."""
    end = 0
    for m in _CLOSE_TAG.finditer(text):
        end = m.end()
    return end
