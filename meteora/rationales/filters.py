"""Filters that make a weak rationale generator safe.

Small models often echo the instruction ("The correct passage should contain the
following evidence:"), restate the query, answer it ("The answer is no."), or repeat
one line several times. Used as rationales, such lines pull the evidence selector
towards the query's own wording or towards nothing at all, and measurably hurt
selection. :func:`filter_rationales` drops them and says why:

``"too-short"``
    fewer than ``min_words`` words.
``"garbage"``
    mostly non-words or one token repeated (a broken or random model).
``"echoes-instruction"``
    a generic meta line ("Here are 3 rationales", "the correct passage should contain
    the following evidence"), a line made mostly of the template's instruction words
    rather than the query's topic, a copy of one of the template's few-shot example
    answers (similarity of at least 0.6, labels ignored), or a bare label.
``"answers-query"``
    starts like an answer ("Yes, …", "No.", "The answer is …", "In conclusion …") or
    states a finding as settled ("Outcome: no significant difference …", "… did not
    have a significant impact …").
``"restates-query"``
    the query verbatim, or a line whose content words are (almost) all query words
    (share above ``max_query_overlap``). Generic evidence words such as "look for",
    "evidence", "study", "passage" are ignored when measuring this, so "Look for
    evidence on <the query>" is a restatement too.
``"near-duplicate"``
    too similar to a rationale kept earlier: word-set Jaccard or sequence similarity
    of at least ``near_duplicate`` (label words such as "Outcome:" ignored), or the
    earlier one's words plus at most two more.

Example:
    >>> kept, dropped = filter_rationales(
    ...     "Does aspirin reduce stroke risk in the elderly?",
    ...     ["The answer is yes.", "Bleeding complications and adverse events of aspirin.",
    ...      "Aspirin reduces stroke risk in the elderly.", "bleeding complications and adverse events of aspirin"])
    >>> kept
    ['Bleeding complications and adverse events of aspirin.']
    >>> [reason for _, reason in dropped]
    ['answers-query', 'restates-query', 'near-duplicate']
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["filter_rationales", "content_tokens", "DROP_REASONS", "META_PATTERNS"]

DROP_REASONS = (
    "too-short",
    "garbage",
    "echoes-instruction",
    "answers-query",
    "restates-query",
    "near-duplicate",
)

# Function words: ignored by every overlap measure.
_STOPWORDS = frozenset(
    """a an and are as at be been being both but by can could did do does doing done during each
    either for from had has have having he her here hers him his how i if in into is it its itself
    may might more most must no nor not of on or other our out over own same shall she should so
    some such than that the their theirs them then there these they this those through to too under
    until up upon very was we were what when where whether which while who whom whose why will with
    within without would you your yours also any all only just whereas among between versus vs""".split()
)

# Generic "what to look for" vocabulary: not evidence of novelty when measuring how
# much a rationale adds beyond the query or the instruction.
_META_WORDS = frozenset(
    """look looking find finding search searching check checking examine identify evidence evidences
    passage passages information info mention mentions mentioned describe describes describing
    description discuss discusses discussing report reports reported reporting data detail details
    provide provides contain contains containing include includes including regarding related
    relation relevant regard concerning about whether correct following rationale rationales
    question questions query answer answers statement statements study studies article text
    abstract abstracts show shows showing indicate indicates support supports suggest suggests
    determine assess assessing address addresses explain explains""".split()
)

#: Lines that are about the task, not about the query's topic.
META_PATTERNS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:correct|relevant)\s+passage\s+(?:should|must|would|will)\s+contain",
        r"\bshould\s+contain\s+the\s+following\b",
        r"^\s*(?:here\s+(?:are|is)|below\s+(?:are|is)|sure|certainly|of\s+course)\b",
        r"\b(?:generate|list|write|provide)\s+(?:\d+|three|two|four|five|several)\s+(?:concise\s+|short\s+|distinct\s+)?rationales?\b",
        r"^\s*(?:the\s+)?(?:following\s+)?(?:rationales?|evidence)\s*(?:are|is)?\s*:?\s*$",
        r"\b(?:as\s+an\s+ai|i\s+(?:cannot|can't|am\s+unable))\b",
        r"\bdo\s+not\s+answer\s+the\s+question\b",
    )
)

_LABEL_PREFIX = r"(?:[^\W\d_][\w /-]{0,30}:\s*)?"
_ANSWER_START = re.compile(
    r"""^\s*(?:
        (?:yes|no|maybe|yeah|nope|correct|incorrect|true|false)\b\s*[,.!:;\-–—]
      | (?:yes|no|maybe)\s*$
      | (?:the\s+)?(?:short\s+|final\s+|simple\s+)?answer\s+(?:to\s+(?:this|the)\s+question\s+)?(?:is|would\s+be)\b
      | in\s+(?:conclusion|summary)\b
      | therefore\b | thus\b | to\s+conclude\b | in\s+short\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# a finding stated as settled ("Outcome: no significant difference ...")
_ANSWER_FINDING = re.compile(
    _LABEL_PREFIX
    + r"""(?:
        no\s+(?:significant\s+|clear\s+|direct\s+|major\s+)?(?:impact|effect|difference|benefit|association|improvement|change)\b
      | .*\b(?:did|does|do|was|were|is|are)\s+not\s+(?:have\s+)?(?:a\s+)?significant(?:ly)?\b
      | .*\b(?:had|has|have|showed|shows)\s+no\s+significant\b
      | .*\bthere\s+(?:is|was|were|are)\s+no\s+(?:significant\s+)?(?:difference|association|effect|impact|benefit)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_EXAMPLE_COPY = 0.6  # similarity to a few-shot example answer line that counts as a copy
_ALPHA_WORD = re.compile(r"^[^\W\d_]{2,}$|^[^\W\d_]+[-'][^\W\d_]+$", re.UNICODE)


def _stem(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def content_tokens(text: str) -> list[str]:
    """Lower-cased, lightly stemmed tokens of ``text`` without function words.

    Example:
        >>> content_tokens("Do mitochondria play a role in the studies?")
        ['mitochondria', 'play', 'role', 'study']
    """
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]


def _words(text: str) -> list[str]:
    return text.split()


def _is_garbage(text: str) -> bool:
    words = _words(text)
    if not words:
        return True
    wordish = sum(1 for w in words if _ALPHA_WORD.match(w.strip(".,;:!?()[]{}\"'`*")))
    if wordish / len(words) < 0.5:
        return True
    toks = [t.lower() for t in _TOKEN.findall(text)]
    if len(toks) >= 6:
        top = Counter(toks).most_common(1)[0][1]
        if top / len(toks) > 0.5:
            return True
    return False


@dataclass(frozen=True)
class _TemplateWords:
    """What a template contributes to the prompt, split by how the filters use it."""

    instruction: frozenset[str]  # content words of the instruction / system / user layout
    labels: frozenset[str]  # "Label:" words of the example answers and the response prefix
    example_lines: tuple[str, ...]  # the example answers, one rationale per entry


_LINE_LABEL = re.compile(r"^\s*(?:\d{1,2}[.)]\s*)?(?P<label>[^\W\d_][\w /-]{0,40}?)\s*:")


def _template_words(template: Any) -> _TemplateWords:
    if template is None:
        return _TemplateWords(frozenset(), frozenset(), ())
    if isinstance(template, str):
        from meteora.rationales.templates import get_template

        template = get_template(template)
    parts: list[str] = []
    for attr in ("instruction", "system", "chat_user"):
        value = getattr(template, attr, None)
        if isinstance(value, str):
            parts.append(
                value.replace("{n}", " ").replace("{query}", " ").replace("{instruction}", " ")
            )
    labels: set[str] = set()
    lines: list[str] = []
    prefix = getattr(template, "response_prefix", "") or ""
    answers = [prefix, *(str(r) for _, r in (getattr(template, "examples", None) or ()))]
    for i, answer in enumerate(answers):
        for part in answer.splitlines():
            m = _LINE_LABEL.match(part)
            if m is not None:
                labels.update(content_tokens(m.group("label")))
            body = re.sub(r"^\s*(?:\d{1,2}[.)]|[-*•])\s*", "", part).strip()
            if body and i > 0:  # the prefix is not an example answer
                lines.append(body)
    return _TemplateWords(
        frozenset(content_tokens(" ".join(parts))), frozenset(labels), tuple(lines)
    )


def _similarity(a: str, b: str, ignore: frozenset[str] | set[str] = frozenset()) -> float:
    """max(word-set Jaccard, sequence ratio) of the content words, ``ignore`` left out."""
    ta = [t for t in content_tokens(a) if t not in ignore]
    tb = [t for t in content_tokens(b) if t not in ignore]
    if not ta or not tb:
        return 1.0 if ta == tb else 0.0
    sa, sb = set(ta), set(tb)
    jaccard = len(sa & sb) / len(sa | sb)
    seq = difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()
    return max(jaccard, seq)


def _near_duplicate(a: str, b: str, ignore: set[str], threshold: float) -> bool:
    """Similar enough, or one adds at most two words to the other's (2+ word) content."""
    if _similarity(a, b, ignore) >= threshold:
        return True
    sa = {t for t in content_tokens(a) if t not in ignore and t not in _META_WORDS}
    sb = {t for t in content_tokens(b) if t not in ignore and t not in _META_WORDS}
    small, large = (sa, sb) if len(sa) <= len(sb) else (sb, sa)
    return len(small) >= 2 and small <= large and len(large - small) <= 2


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise InvalidInputError(f"{name} must be a number in (0, 1], got {value!r}")


def filter_rationales(
    query: str,
    rationales: Iterable[str],
    *,
    template: Any = None,
    min_words: int = 3,
    max_query_overlap: float = 0.9,
    near_duplicate: float = 0.85,
    max_instruction_overlap: float = 0.6,
    drop_answers: bool = True,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Drop rationales that echo the prompt, restate or answer the query, or repeat.

    Args:
        query: the query the rationales were generated for.
        rationales: candidate rationales, in output order (earlier ones win ties).
        template: the :class:`~meteora.rationales.templates.PromptTemplate` (or its
            name) that produced them; its instruction and few-shot examples are what
            "echoes-instruction" compares against. ``None`` uses the generic patterns only.
        min_words: fewer words than this is "too-short".
        max_query_overlap: share of a rationale's content words that may come from the
            query; above it the rationale only restates the query.
        near_duplicate: similarity to an earlier kept rationale at or above which a
            rationale is a "near-duplicate".
        max_instruction_overlap: share of a rationale's non-query content words that
            may come from the template's instruction / system text; above it (with at
            most one other new word, and at least half the words not the query's) the
            rationale echoes the instruction.
        drop_answers: drop lines that read as an answer ("Yes, ...", "The answer is",
            "no significant difference ...").

    Returns:
        ``(kept, dropped)``; ``dropped`` holds ``(rationale, reason)`` pairs, reasons
        from :data:`DROP_REASONS`.

    Example:
        >>> filter_rationales("Is drug X safe?", ["Here are 3 rationales:", "Adverse events of drug X in trials."])
        (['Adverse events of drug X in trials.'], [('Here are 3 rationales:', 'echoes-instruction')])
    """
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    if isinstance(rationales, str):
        raise InvalidInputError("rationales must be a list of strings, not one string")
    if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 0:
        raise InvalidInputError(f"min_words must be a non-negative integer, got {min_words!r}")
    _check_fraction("max_query_overlap", max_query_overlap)
    _check_fraction("near_duplicate", near_duplicate)
    _check_fraction("max_instruction_overlap", max_instruction_overlap)

    query_set = set(content_tokens(query))
    query_key = " ".join(content_tokens(query))
    words = _template_words(template)
    instruction_set = set(words.instruction) - _META_WORDS - query_set
    label_set = set(words.labels)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []

    for text in rationales:
        if not isinstance(text, str):
            raise InvalidInputError(f"every rationale must be a string, got {type(text).__name__}")
        reason = _drop_reason(
            text,
            query_set=query_set,
            query_key=query_key,
            instruction_set=instruction_set,
            label_set=label_set,
            example_lines=words.example_lines,
            min_words=min_words,
            max_query_overlap=max_query_overlap,
            max_instruction_overlap=max_instruction_overlap,
            drop_answers=drop_answers,
        )
        if reason is None and any(
            _near_duplicate(text, k, label_set, near_duplicate) for k in kept
        ):
            reason = "near-duplicate"
        if reason is None:
            kept.append(text)
        else:
            dropped.append((text, reason))
    return kept, dropped


def _drop_reason(
    text: str,
    *,
    query_set: set[str],
    query_key: str,
    instruction_set: set[str],
    label_set: set[str],
    example_lines: tuple[str, ...],
    min_words: int,
    max_query_overlap: float,
    max_instruction_overlap: float,
    drop_answers: bool,
) -> str | None:
    if len(_words(text)) < max(min_words, 1):
        return "too-short"
    if _is_garbage(text):
        return "garbage"
    if any(p.search(text) for p in META_PATTERNS):
        return "echoes-instruction"
    if drop_answers and (_ANSWER_START.match(text) or _ANSWER_FINDING.match(text)):
        return "answers-query"
    tokens = content_tokens(text)
    topical = [t for t in tokens if t not in _META_WORDS and t not in label_set]
    if not topical:  # only "look for evidence ..." and label words
        return "echoes-instruction"
    # copied a few-shot example answer (a small model that did not get the query)
    if any(_similarity(text, line, label_set) >= _EXAMPLE_COPY for line in example_lines):
        return "echoes-instruction"
    # instruction echo: most words are not the query's, and those come from the prompt
    beyond_query = [t for t in topical if t not in query_set]
    if beyond_query and 2 * len(beyond_query) >= len(topical):
        from_instruction = sum(1 for t in beyond_query if t in instruction_set)
        novel = set(beyond_query) - instruction_set
        if from_instruction / len(beyond_query) > max_instruction_overlap and len(novel) <= 1:
            return "echoes-instruction"
    if query_key and " ".join(tokens) == query_key:
        return "restates-query"
    # restatement: apart from generic and label words, (almost) every word is the query's
    in_query = len(topical) - len(beyond_query)
    if in_query / len(topical) > max_query_overlap:
        return "restates-query"
    return None
