"""Forgiving parser for rationale-generator output (stage 1 of METEORA).

Language models format lists in many ways, and small ones format them badly. The
parser tries, in order:

1. **XML tags** — ``<rationale_1>…</rationale_1>``, ``<rationale>…</rationale>`` (an
   unclosed last tag, cut off by ``max_new_tokens``, still counts). A leading
   ``[label]`` is kept in the text as ``"label: strategy"`` (brackets removed: the label
   names the search dimension, which helps the embedding match) and is also returned on
   its own in :attr:`ParsedRationales.labels`.
2. **Lists** — numbered (``1.``, ``1)``, ``(1)``), bullets (``-``, ``*``, ``•``) and
   ``Rationale N:`` / ``Evidence N:`` headings, with markdown bold removed; indented
   continuation lines are joined to their item.
3. **Plain lines** — one rationale per non-empty line (the ``med-rationale`` format).

Everything after a hallucinated new prompt section (a line starting with ``###``) or a
leaked special token (``<|im_end|>``, ``</s>``…) is ignored, and so are lead-in lines
such as ``"Here are 3 rationales:"`` (short lines ending with a colon). Each rationale's
``Flag Instructions: …`` tail (the ``meteora`` template's verifier hints) is split off
into :attr:`ParsedRationales.flags`. Empty items and exact duplicates (ignoring case,
spacing and trailing punctuation) are dropped; at most ``n`` are kept.
``<think>…</think>`` reasoning (also an unclosed one) is removed with ``strip_think``.

When nothing usable is found, ``method`` is ``"none"`` and the list is empty; the
generator then falls back to the query (see :mod:`meteora.rationales.generator`).

Example:
    >>> p = parse_rationales("Here are the rationales:\\n1. Mortality at 30 days.\\n2. Adverse events.")
    >>> p.rationales, p.method
    (['Mortality at 30 days.', 'Adverse events.'], 'numbered')
    >>> parse_rationales("<rationale_1>[outcome] Look for 30-day mortality</rationale_1>").rationales
    ['outcome: Look for 30-day mortality']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from meteora.errors import InvalidInputError

__all__ = ["ParsedRationales", "parse_rationales", "strip_think", "normalize_for_dedupe", "cut_at_section_break"]

ParseMethod = Literal["xml", "numbered", "lines", "none"]

_THINK_BLOCK = re.compile(r"<think\s*>.*?</think\s*>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think\s*>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think\s*>", re.IGNORECASE)

_TAG = r"rationale(?:[\s_-]*\d+)?"
_XML_OPEN = re.compile(rf"<\s*{_TAG}\s*>", re.IGNORECASE)
_XML_CLOSE = re.compile(rf"<\s*/\s*{_TAG}\s*>", re.IGNORECASE)
_XML_ITEM = re.compile(
    rf"<\s*{_TAG}\s*>(?P<body>.*?)(?:<\s*/\s*{_TAG}\s*>|(?=<\s*{_TAG}\s*>)|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_LABEL = re.compile(r"^\s*\[(?P<label>[^\[\]\n]{1,80})\]\s*[:\-–—]?\s*")
_FLAG = re.compile(r"\bflag[\s_-]*instructions?\s*[:\-–—]\s*", re.IGNORECASE)

# list markers: "1.", "1)", "(1)", "#1", "-", "*", "•", "Rationale 1:", "**Evidence 2.**"
_ITEM = re.compile(
    r"""^\s*(?:\*\*|__)?\s*(?:
        (?:\(?\#?\d{1,2}[.)](?!\d))          # 1.  1)  (1)  #1.
      | (?:[-*•‣◦·]|\u2013|\u2014)(?=\s)    # bullets
      | (?:rationale|evidence|reason|point|item|step|criterion)\s*\#?\s*\d{1,2}\s*(?:\*\*|__)?\s*[:.)\-–—]
    )\s*(?:\*\*|__)?\s*(?P<body>.*)$""",
    re.IGNORECASE | re.VERBOSE,
)
_SECTION_BREAK = re.compile(r"^\s*###", re.MULTILINE)
_SPECIAL_LEAKS = re.compile(
    r"<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<end_of_turn>|</s>|<\|end\|>", re.IGNORECASE
)
_LEAD_IN_MAX_WORDS = 12
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass
class ParsedRationales:
    """What :func:`parse_rationales` found.

    Attributes:
        rationales: the rationale texts, in output order, deduplicated, at most ``n``.
        flags: for each rationale its ``Flag Instructions: …`` text, ``None`` when absent.
        method: which rule matched: ``"xml"``, ``"numbered"``, ``"lines"`` or ``"none"``.
        labels: for each rationale its ``[label]`` (XML format), ``None`` when absent.
    """

    rationales: list[str]
    flags: list[str | None]
    method: ParseMethod
    labels: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rationales)


def strip_think(text: str) -> str:
    """Remove ``<think>…</think>`` reasoning blocks.

    An unclosed ``<think>`` (generation cut off while reasoning) removes everything
    after it; a stray ``</think>`` (the opening tag was part of the prompt) removes
    everything before it.

    Example:
        >>> strip_think("<think>hmm, the user wants...</think>1. Mortality")
        '1. Mortality'
        >>> strip_think("1. Mortality\\n<think>and then")
        '1. Mortality\\n'
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened is not None:
        text = text[: opened.start()]
    return text


def normalize_for_dedupe(text: str) -> str:
    """The key two rationales must share to count as exact duplicates.

    Lower case, single spaces, no surrounding punctuation.

    Example:
        >>> normalize_for_dedupe("  Look for  MORTALITY. ")
        'look for mortality'
    """
    return " ".join(text.lower().split()).strip(" .,;:!?-–—*\"'`")


def _clean(text: str) -> str:
    text = text.replace("**", "").replace("__", "")
    text = " ".join(text.split())
    return text.strip().strip("*").strip()


def _split_flag(text: str) -> tuple[str, str | None]:
    m = _FLAG.search(text)
    if m is None:
        return text, None
    flag = _clean(text[m.end() :]).rstrip(".;,").strip() or None
    body = text[: m.start()].rstrip(" \t\n-–—;,(")
    return body, flag


def _is_lead_in(line: str) -> bool:
    stripped = line.strip()
    return stripped.endswith(":") and len(_WORD.findall(stripped)) <= _LEAD_IN_MAX_WORDS


def cut_at_section_break(text: str) -> str:
    r"""``text`` up to a made-up new prompt section (a line starting with ``###``), which
    the parser never reads.

    Example:
        >>> cut_at_section_break("- a\n- b\n\n### Query:\nx")
        '- a\n- b\n'
    """
    brk = _SECTION_BREAK.search(text)
    return text if brk is None else text[: brk.start()]


def _truncate_noise(text: str) -> str:
    leak = _SPECIAL_LEAKS.search(text)
    if leak is not None:
        text = text[: leak.start()]
    return cut_at_section_break(text)


def _xml_items(text: str) -> list[tuple[str, str | None]]:
    if _XML_OPEN.search(text) is None:
        return []
    items = []
    for m in _XML_ITEM.finditer(text):
        body = _XML_CLOSE.sub(" ", m.group("body"))
        label = None
        lm = _LABEL.match(body)
        if lm is not None:
            label = _clean(lm.group("label"))
            rest = body[lm.end() :]
            body = f"{label}: {rest}" if label and _clean(rest) else label
        items.append((body, label))
    return items


def _list_items(lines: list[str]) -> list[str]:
    items: list[str] = []
    current: list[str] | None = None
    blank_since_item = False
    for line in lines:
        if not line.strip():
            blank_since_item = True
            continue
        m = _ITEM.match(line)
        if m is not None:
            if current is not None:
                items.append(" ".join(current))
            current = [m.group("body")]
            blank_since_item = False
        elif current is not None and not blank_since_item and line[:1].isspace():
            current.append(line.strip())  # indented continuation of the item
        else:
            if current is not None:
                items.append(" ".join(current))
                current = None
    if current is not None:
        items.append(" ".join(current))
    return items


def parse_rationales(
    text: str, n: int | None = None, *, strip_think: bool = False
) -> ParsedRationales:
    """Extract rationales from raw model output.

    Args:
        text: the generated text (without the prompt).
        n: keep at most this many (``None`` keeps all).
        strip_think: remove ``<think>…</think>`` reasoning first (``cot`` template).

    Returns:
        :class:`ParsedRationales`; ``method == "none"`` and no rationales when the
        text holds nothing usable (empty, whitespace, punctuation only).

    Example:
        >>> parse_rationales("Rationale 1: Look for dosage.\\nRationale 2: Look for safety.", n=1).rationales
        ['Look for dosage.']
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidInputError(f"n must be a positive integer or None, got {n!r}")
    if strip_think:
        text = _strip_think(text)
    text = _truncate_noise(text).replace("\r\n", "\n").replace("\r", "\n")

    method: ParseMethod
    raw_items: list[tuple[str, str | None]] = _xml_items(text)
    if raw_items:
        method = "xml"
    else:
        lines = text.split("\n")
        listed = _list_items(lines)
        if listed:
            method = "numbered"
            raw_items = [(item, None) for item in listed]
        else:
            method = "lines"
            raw_items = [(line, None) for line in lines if line.strip() and not _is_lead_in(line)]

    rationales: list[str] = []
    flags: list[str | None] = []
    labels: list[str | None] = []
    seen: set[str] = set()
    for body, label in raw_items:
        body, flag = _split_flag(body)
        body = _clean(body)
        if not _WORD.search(body):  # empty or punctuation only
            continue
        key = normalize_for_dedupe(body)
        if key in seen:
            continue
        seen.add(key)
        rationales.append(body)
        flags.append(flag)
        labels.append(label)
        if n is not None and len(rationales) >= n:
            break
    if not rationales:
        return ParsedRationales([], [], "none", [])
    return ParsedRationales(rationales, flags, method, labels)


_strip_think = strip_think
