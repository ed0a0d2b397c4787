"""When to stop generating rationales for a row, before EOS or ``max_new_tokens``.

A model that never emits EOS (the okoene adapter) would otherwise write until
``max_new_tokens``. On the transformers backend :class:`EnoughRationales` (a stopping
criterion) ends a row as soon as its complete lines hold ``n`` usable rationales, or
the model starts a new ``### ...`` prompt section (which the parser ignores anyway).
Backends without stopping criteria get :data:`SECTION_STOPS` as stop strings instead.

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
    """Stopping criterion: a row is done once its complete lines hold ``n`` usable rationales.

    ``generator`` is the :class:`~meteora.rationales.generator.RationaleGenerator`
    that generates (its ``tokenizer`` decodes the rows, its ``_usable`` counts the
    rationales that parsing and filtering would keep).
    """

    def __init__(
        self, generator: Any, queries: list[str], prompt_len: int, n: int, filt: bool
    ) -> None:
        self.generator = generator
        self.queries = queries
        self.prompt_len = prompt_len
        self.n = n
        self.filter = filt
        self.done = [False] * len(queries)
        self.checked_upto = [0] * len(queries)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tok = self.generator.tokenizer
        for row in range(input_ids.shape[0]):
            if self.done[row]:
                continue
            text = tok.decode(input_ids[row, self.prompt_len :], skip_special_tokens=True)
            if SECTION_START.search(text):
                # the model started a new "### ..." section: the parser ignores the rest
                self.done[row] = True
                continue
            cut = max(text.rfind("\n"), last_close_tag_end(text) - 1)
            if cut <= self.checked_upto[row]:
                continue
            self.checked_upto[row] = cut
            usable = self.generator._usable(self.queries[row], text[: cut + 1], self.n, self.filter)
            if len(usable) >= self.n:
                self.done[row] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


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
