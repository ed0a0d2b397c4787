"""The text the service ranks for each request document: Cohere's ``rank_fields`` and
``max_tokens_per_doc``, honoured.

* ``rank_fields`` (object documents): the listed fields, in that order, are read as
  ``field: value`` lines (Cohere's own advice for structured documents); without it a
  document's ``text`` is read.
* ``max_tokens_per_doc``: each text is cut to its first N tokens of the reranker's
  encoder tokenizer (whitespace-separated words when the encoder has none) before
  ranking. What the service returns as the document is the document as sent.

Example:
    >>> ranked_text({"title": "Aspirin", "year": 2020, "text": "..."}, ["title", "year"], 0)
    'title: Aspirin\\nyear: 2020'
    >>> cut_to_tokens(["one two three four"], 2, None)
    ['one two']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["ranked_text", "cut_to_tokens", "encoder_tokenizer"]

_WORD = re.compile(r"\S+")


def ranked_text(doc: Mapping[str, Any], rank_fields: Sequence[str], index: int) -> str:
    """The ``field: value`` lines of ``rank_fields`` in document ``index``.

    Raises:
        InvalidInputError: a field is missing, or its value is not a string or number.
    """
    lines = []
    for name in rank_fields:
        if name not in doc or doc[name] is None:
            raise InvalidInputError(
                f"documents[{index}] has no field {name!r}, which rank_fields names; send it in every document "
                "or leave it out of rank_fields"
            )
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidInputError(
                f"documents[{index}].{name} must be a string or a number to be ranked, got {type(value).__name__}"
            )
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def encoder_tokenizer(reranker: Any) -> Any:
    """The reranker's encoder tokenizer when it has a fast (offset-giving) one, else ``None``."""
    encoder = getattr(reranker, "encoder", None)
    tok = getattr(encoder, "tokenizer", None) or getattr(getattr(encoder, "model", None), "tokenizer", None)
    return tok if getattr(tok, "is_fast", False) else None


def cut_to_tokens(texts: Sequence[str], max_tokens: int, tokenizer: Any) -> list[str]:
    """Each text cut after its first ``max_tokens`` tokens (of ``tokenizer``, or words)."""
    out = []
    for text in texts:
        if tokenizer is None:
            words = list(_WORD.finditer(text))
            out.append(text if len(words) <= max_tokens else text[: words[max_tokens - 1].end()])
            continue
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        out.append(text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]])
    return out
