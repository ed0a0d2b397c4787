"""Lenient parsing of the verifier LM's JSON answers into :class:`Verdict` objects.

Small LMs wrap JSON in prose, use single quotes, trailing commas, Python literals or
synonyms for flag types; :func:`extract_json_object` and :func:`parse_verdict` accept
all of that and **fail closed** (the passage is flagged) when nothing usable is there.
:mod:`meteora.verifier` builds the prompts and drives the LM.

Example:
    >>> v = parse_verdict('Sure! {"relevant": true, "flagged": false, "flag_types": [], "reason": "ok", "confidence": 0.8}')
    >>> (v.relevant, v.flagged, v.confidence)
    (True, False, 0.8)
    >>> parse_verdict("no JSON here").flagged
    True
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from meteora.types import Passage

__all__ = [
    "FLAG_TYPES",
    "DEFAULT_CONFIDENCE",
    "MAX_PARSE_CHARS",
    "Verdict",
    "VerificationResult",
    "parse_verdict",
    "parse_contradiction",
    "extract_json_object",
]

logger = logging.getLogger(__name__)

FLAG_TYPES = ("CONTRADICTION", "FACTUAL", "INSTRUCTION")

_FLAG_SYNONYMS = {
    "CONTRADICTION": "CONTRADICTION",
    "CONTRADICTS": "CONTRADICTION",
    "CONTRADICTORY": "CONTRADICTION",
    "FACTUAL": "FACTUAL",
    "FACT": "FACTUAL",
    "FACTUAL_ERROR": "FACTUAL",
    "FACTUAL ERROR": "FACTUAL",
    "MISINFORMATION": "FACTUAL",
    "INSTRUCTION": "INSTRUCTION",
    "INSTRUCTIONS": "INSTRUCTION",
    "PROMPT_INJECTION": "INSTRUCTION",
    "PROMPT INJECTION": "INSTRUCTION",
    "INJECTION": "INSTRUCTION",
}

#: Confidence recorded when the LM gives none (or an unusable one).
DEFAULT_CONFIDENCE = 0.5
#: LM outputs longer than this are cut before JSON extraction (bounded parsing time).
MAX_PARSE_CHARS = 20_000


# --------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    """The verifier's decision about one passage.

    Attributes:
        relevant: the passage bears on the query.
        flagged: the passage must be dropped.
        flag_types: why, among ``CONTRADICTION``, ``FACTUAL``, ``INSTRUCTION``.
        reason: a short explanation (the LM's, or the parser's when it failed).
        confidence: the LM's confidence in ``[0, 1]`` (``0.0`` for a failed parse,
            ``DEFAULT_CONFIDENCE`` when the LM gave none).
        raw: the LM output the verdict was parsed from.
        parse_error: set when the output could not be used; the passage then fails
            closed (``flagged=True``, ``relevant=False``).
    """

    relevant: bool
    flagged: bool
    flag_types: list[str] = field(default_factory=list)
    reason: str = ""
    confidence: float = DEFAULT_CONFIDENCE
    raw: str | None = None
    parse_error: str | None = None

    @classmethod
    def fail_closed(cls, why: str, raw: str | None = None) -> Verdict:
        """A verdict that drops the passage because the LM answer was unusable."""
        return cls(
            relevant=False,
            flagged=True,
            flag_types=[],
            reason=f"unusable verifier output, passage dropped (fail closed): {why}",
            confidence=0.0,
            raw=raw,
            parse_error=why,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass
class VerificationResult:
    """Outcome of verifying a list of passages.

    Attributes:
        accepted: passages kept, in input order.
        rejected: ``(passage, verdict)`` for every dropped passage, in input order.
        verdicts: the verdict of every passage, by passage id.
        summaries: the summaries the contradiction check used, by passage id (only for
            :class:`Verifier`; empty for a custom check).
    """

    accepted: list[Passage]
    rejected: list[tuple[Passage, Verdict]]
    verdicts: dict[str, Verdict]
    summaries: dict[str, str] = field(default_factory=dict)

    @property
    def accepted_ids(self) -> list[str]:
        return [p.id for p in self.accepted]

    @property
    def rejected_ids(self) -> list[str]:
        return [p.id for p, _ in self.rejected]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "accepted": self.accepted_ids,
            "rejected": self.rejected_ids,
            "verdicts": {pid: v.to_dict() for pid, v in self.verdicts.items()},
            "summaries": dict(self.summaries),
        }

    def __repr__(self) -> str:
        return f"VerificationResult(accepted={self.accepted_ids}, rejected={self.rejected_ids})"


# --------------------------------------------------------------------------- parsing


def _find_objects(text: str) -> list[str]:
    """Balanced ``{...}`` spans, outermost first, scanning string literals correctly."""
    spans: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("{", i)
        if start < 0:
            break
        depth = 0
        quote: str | None = None
        j = start
        end = -1
        while j < n:
            ch = text[j]
            if quote is not None:
                if ch == "\\":
                    j += 2
                    continue
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                # an apostrophe inside a bare word (don't) is not a string delimiter
                if ch == "'" and j > 0 and text[j - 1].isalnum():
                    pass
                else:
                    quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = j
                    break
            j += 1
        if end < 0:
            i = start + 1
            continue
        spans.append(text[start : end + 1])
        i = end + 1
    return spans


_BARE_WORDS = {
    "true": "true",
    "false": "false",
    "null": "null",
    "True": "true",
    "False": "false",
    "None": "null",
    "yes": '"yes"',
    "no": '"no"',
    "Yes": '"yes"',
    "No": '"no"',
}


def _lenient_json(span: str) -> str:
    """Rewrite a JSON-ish object into strict JSON, respecting string boundaries.

    Single-quoted strings become double-quoted, Python literals ``True``/``False``/
    ``None`` become JSON ones, bare ``yes``/``no`` become strings, unquoted keys get quotes, and trailing commas before
    ``}`` or ``]`` are removed. Nothing is evaluated.
    """
    out: list[str] = []
    i = 0
    n = len(span)
    while i < n:
        ch = span[i]
        if ch in "\"'":
            quote = ch
            j = i + 1
            buf: list[str] = []
            while j < n and span[j] != quote:
                if span[j] == "\\" and j + 1 < n:
                    nxt = span[j + 1]
                    # \' is not a JSON escape; keep the others as they are
                    buf.append("'" if nxt == "'" else "\\" + nxt)
                    j += 2
                    continue
                c = span[j]
                if c == '"':
                    buf.append('\\"')
                elif c == "\n":
                    buf.append("\\n")
                elif c == "\t":
                    buf.append("\\t")
                else:
                    buf.append(c)
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
            continue
        if ch == ",":
            k = i + 1
            while k < n and span[k].isspace():
                k += 1
            if k < n and span[k] in "}]":
                i += 1
                continue
        if ch.isalpha():
            k = i
            while k < n and (span[k].isalnum() or span[k] == "_"):
                k += 1
            word = span[i:k]
            m = k
            while m < n and span[m].isspace():
                m += 1
            if m < n and span[m] == ":" and word not in _BARE_WORDS:
                out.append('"' + word + '"')  # an unquoted key
            else:
                out.append(_BARE_WORDS.get(word, word))
            i = k
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def extract_json_object(text: str) -> dict[str, Any]:
    """Find the first JSON object in an LM output and return it as a dict.

    Tolerates code fences, prose around the object, single-quoted strings, Python
    ``True``/``False``/``None`` and trailing commas. Never evaluates code.

    Raises:
        ValueError: no object could be parsed (the message says why).

    Example:
        >>> extract_json_object("Sure! ```json\\n{'flagged': True, 'reason': 'x',}\\n```")
        {'flagged': True, 'reason': 'x'}
    """
    if not isinstance(text, str):
        raise ValueError(f"the LM output is a {type(text).__name__}, not text")
    if not text.strip():
        raise ValueError("the LM output is empty")
    text = text[:MAX_PARSE_CHARS]
    spans = _find_objects(text)
    if not spans:
        raise ValueError("no JSON object ({...}) found in the LM output")
    last_error = ""
    for span in spans:
        for candidate in (span, _lenient_json(span)):
            try:
                obj = json.loads(candidate)
            except (json.JSONDecodeError, RecursionError) as exc:
                last_error = str(exc)
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError(f"found {{...}} but it is not valid JSON ({last_error})")


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ValueError(f"field {name!r} must be a boolean, got {value!r}")


def _as_confidence(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return DEFAULT_CONFIDENCE
    if isinstance(value, str):
        v = value.strip().rstrip("%")
        try:
            x = float(v)
        except ValueError:
            return DEFAULT_CONFIDENCE
        if value.strip().endswith("%"):
            x /= 100.0
    elif isinstance(value, (int, float)):
        x = float(value)
    else:
        return DEFAULT_CONFIDENCE
    if not math.isfinite(x):
        return DEFAULT_CONFIDENCE
    if 1.0 < x <= 100.0:  # a percentage
        x /= 100.0
    return min(max(x, 0.0), 1.0)


def _as_flag_types(value: Any) -> list[str]:
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, str):
        items = [v for v in re.split(r"[,;|/]", value) if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"field 'flag_types' must be a list of strings, got {value!r}")
    out: list[str] = []
    for item in items:
        key = str(item).strip().upper().replace("-", "_")
        flag = _FLAG_SYNONYMS.get(key) or _FLAG_SYNONYMS.get(key.replace("_", " "))
        if flag is None:
            logger.debug("ignoring unknown flag type %r", item)
            continue
        if flag not in out:
            out.append(flag)
    return out


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def parse_verdict(text: str) -> Verdict:
    """Parse a verification answer ``{relevant, flagged, flag_types, reason, confidence}``.

    ``relevant`` and ``flagged`` are required (booleans, or strings/numbers such as
    ``"yes"``, ``"false"``, ``1``); ``flag_types`` (list or comma-separated string,
    unknown types ignored), ``reason`` and ``confidence`` (clipped to ``[0, 1]``;
    percentages accepted) are optional. A listed flag type marks the passage flagged
    even if ``flagged`` says false (the conservative reading). Anything unusable fails
    closed: ``flagged=True``, ``relevant=False``, ``parse_error`` set. Never raises.

    Example:
        >>> parse_verdict('```json\\n{"relevant": "yes", "flagged": false}\\n```').relevant
        True
        >>> v = parse_verdict("I cannot answer that.")
        >>> v.flagged, v.parse_error
        (True, 'no JSON object ({...}) found in the LM output')
    """
    raw = text if isinstance(text, str) else None
    try:
        obj = _lower_keys(extract_json_object(text))
        missing = [k for k in ("relevant", "flagged") if k not in obj]
        if missing:
            raise ValueError(f"missing required field(s) {missing} (got {sorted(obj)})")
        relevant = _as_bool(obj["relevant"], "relevant")
        flagged = _as_bool(obj["flagged"], "flagged")
        flag_types = _as_flag_types(obj.get("flag_types"))
    except ValueError as exc:
        return Verdict.fail_closed(str(exc), raw)
    reason = obj.get("reason")
    reason = "" if reason is None else str(reason)
    return Verdict(
        relevant=relevant,
        flagged=flagged or bool(flag_types),
        flag_types=flag_types,
        reason=reason,
        confidence=_as_confidence(obj.get("confidence")),
        raw=raw,
    )


def parse_contradiction(text: str) -> Verdict:
    """Parse a contradiction-check answer ``{contradiction, reason, confidence}``.

    Returns a :class:`Verdict` flagged ``CONTRADICTION`` when the LM says so, a
    passing one otherwise, and a fail-closed one when the answer is unusable.

    Example:
        >>> parse_contradiction('{"contradiction": true, "reason": "opposite effect"}').flag_types
        ['CONTRADICTION']
    """
    raw = text if isinstance(text, str) else None
    try:
        obj = _lower_keys(extract_json_object(text))
        key = next((k for k in ("contradiction", "contradicts", "flagged") if k in obj), None)
        if key is None:
            raise ValueError(f"missing required field 'contradiction' (got {sorted(obj)})")
        contradiction = _as_bool(obj[key], "contradiction")
    except ValueError as exc:
        return Verdict.fail_closed(f"contradiction check: {exc}", raw)
    reason = obj.get("reason")
    return Verdict(
        relevant=True,
        flagged=contradiction,
        flag_types=["CONTRADICTION"] if contradiction else [],
        reason="" if reason is None else str(reason),
        confidence=_as_confidence(obj.get("confidence")),
        raw=raw,
    )
