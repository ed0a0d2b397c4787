"""The medical rationale SFT format: ``{id, query, rationales, text}`` per JSONL line.

:func:`load_rationale_sft` validates every row (bad ones are reported as ``file:line``),
drops duplicate and excluded queries, and returns an :class:`SFTDataset` whose
:meth:`~SFTDataset.pairs` renders ``{"prompt", "completion"}`` pairs with a prompt template.

Example:
    >>> import json, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sft.jsonl"
    >>> row = {"id": "1", "query": "Does aspirin prevent stroke?",
    ...        "rationales": ["Look for randomized trials of aspirin in adults."]}
    >>> _ = p.write_text(json.dumps(row) + "\\n", encoding="utf-8")
    >>> ds = load_rationale_sft(p)
    >>> len(ds), ds[0].response
    (1, 'Look for randomized trials of aspirin in adults.')
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.errors import InvalidInputError, TrainingDataError
from meteora.rationales.templates import PromptTemplate, get_template
from meteora.training.jsonl import (
    RowProblem,
    _iter_jsonl,
    _problem_message,
    _require_file,
    file_sha256,
)

__all__ = [
    "MIN_WORDS",
    "MAX_WORDS",
    "RationaleExample",
    "SFTDataset",
    "load_rationale_sft",
    "normalize_query",
]

logger = logging.getLogger(__name__)

#: Word-count bounds for one rationale (inclusive).
MIN_WORDS = 4
MAX_WORDS = 80


def normalize_query(query: str) -> str:
    """Key used to deduplicate queries: case-folded, whitespace collapsed, end punctuation dropped.

    Example:
        >>> normalize_query("  What is  Aspirin? ") == normalize_query("what is aspirin")
        True
    """
    return " ".join(query.casefold().split()).rstrip(" ?.!")


@dataclass(frozen=True)
class RationaleExample:
    """One validated med-rationale row."""

    id: str
    query: str
    rationales: tuple[str, ...]
    line: int
    text: str | None = None

    @property
    def response(self) -> str:
        """The training response: one rationale per line."""
        return "\n".join(self.rationales)


@dataclass
class SFTDataset:
    """Validated rationale SFT examples, plus what was rejected or deduplicated.

    Attributes:
        examples: the rows kept, in file order.
        rejected: rows that failed validation (file, line, reason).
        duplicates: rows dropped because their normalised query appeared earlier.
        excluded: rows dropped because their query is in ``exclude_queries``.
        path: the source file (``None`` when built in memory).
        sha256: the source file's digest.
    """

    examples: list[RationaleExample]
    rejected: list[RowProblem] = field(default_factory=list)
    duplicates: list[RowProblem] = field(default_factory=list)
    excluded: list[RowProblem] = field(default_factory=list)
    path: Path | None = None
    sha256: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[RationaleExample]:
        return iter(self.examples)

    def __getitem__(self, i: int) -> RationaleExample:
        return self.examples[i]

    def __repr__(self) -> str:
        src = self.path.name if self.path else "<memory>"
        return (
            f"SFTDataset({src!r}, examples={len(self.examples)}, rejected={len(self.rejected)}, "
            f"duplicates={len(self.duplicates)}, excluded={len(self.excluded)})"
        )

    def queries(self) -> list[str]:
        """The queries of the kept examples."""
        return [e.query for e in self.examples]

    def pairs(
        self,
        template: str | PromptTemplate = "med-rationale",
        *,
        n: int | str | None = None,
        tokenizer: Any = None,
    ) -> list[dict[str, str]]:
        """``[{"prompt", "completion"}]`` for SFT, rendered with a prompt template.

        Args:
            template: template name or object; the default reproduces the adapter's format.
            n: the number of rationales the prompt asks for: ``None`` = the template's
                default (3 for ``med-rationale``, which is what the original ``text`` field
                says on 99 % of rows, even for rows with 4 or 5 rationales), ``"count"`` =
                the row's own number of rationales, or an integer.
            tokenizer: needed by chat templates.
        """
        tpl = get_template(template)
        out = []
        for ex in self.examples:
            if n == "count":
                k: int | None = len(ex.rationales)
            elif n is None or (isinstance(n, int) and not isinstance(n, bool)):
                k = n
            else:
                raise InvalidInputError(f"n must be None, 'count' or a positive integer, got {n!r}")
            prompt, completion = tpl.training_pair(ex.query, ex.response, k, tokenizer)
            out.append({"prompt": prompt, "completion": completion})
        return out

    def text_mismatches(
        self, template: str | PromptTemplate = "med-rationale", n: int | None = None
    ) -> list[RowProblem]:
        """Rows whose stored ``text`` differs from ``prompt + response`` rendered by ``template``.

        Rows without a ``text`` field are not compared. Each problem says how the text
        differs (missing response, different prompt, response joined differently, ...).
        """
        tpl = get_template(template)
        problems: list[RowProblem] = []
        path = str(self.path) if self.path else "<memory>"
        for ex in self.examples:
            if ex.text is None:
                continue
            prompt, completion = tpl.training_pair(ex.query, ex.response, n, None)
            if ex.text == prompt + completion:
                continue
            marker = "\n\n### Response:\n"
            if marker not in ex.text:
                reason = "text has no '### Response:' section (prompt only)"
            else:
                head, resp = ex.text.split(marker, 1)
                parts = []
                if head + marker != prompt:
                    parts.append("prompt differs (instruction wording, n, or query spelling)")
                if resp != completion:
                    if resp == " ".join(ex.rationales):
                        parts.append("response joins the rationales with spaces")
                    elif [" ".join(line.split()) for line in resp.strip().split("\n")] == list(
                        ex.rationales
                    ):
                        parts.append("response differs only in whitespace")
                    else:
                        parts.append("response differs from the rationales (edited or re-split)")
                reason = "; ".join(parts) or "differs"
            problems.append(RowProblem(path, ex.line, reason))
        return problems


def _check_rationale_row(obj: Any, min_words: int, max_words: int) -> tuple[str, list[str]] | str:
    """Return ``(query, rationales)`` or an error string."""
    if not isinstance(obj, Mapping):
        return f"expected a JSON object, got {type(obj).__name__}"
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        return "missing or empty 'query'"
    rationales = obj.get("rationales")
    if not isinstance(rationales, list) or not rationales:
        return "'rationales' must be a non-empty list of strings"
    clean: list[str] = []
    for i, r in enumerate(rationales, start=1):
        if not isinstance(r, str):
            return f"rationale {i} is not a string ({type(r).__name__})"
        text = " ".join(r.split())
        words = len(text.split())
        if words < min_words or words > max_words:
            return (
                f"rationale {i} has {words} words (allowed {min_words}-{max_words}): {text[:60]!r}"
            )
        clean.append(text)
    return " ".join(query.split()), clean


def load_rationale_sft(
    path: str | os.PathLike[str],
    *,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
    dedupe: bool = True,
    strict: bool = False,
    exclude_queries: Iterable[str] | None = None,
) -> SFTDataset:
    """Load and validate a med-rationale SFT file (``{id, query, rationales, text}`` per line).

    A row is valid when it is a JSON object with a non-empty ``query`` and a non-empty
    list ``rationales`` whose every item has ``min_words``..``max_words`` words.
    Whitespace inside a rationale (including stray newlines) is collapsed to single
    spaces, so each rationale is one line of the response. With ``dedupe`` only the
    first row of each normalised query (:func:`normalize_query`) is kept.

    Args:
        path: the JSONL file.
        min_words, max_words: word-count bounds per rationale.
        dedupe: drop rows whose normalised query was already seen.
        strict: raise on any bad row instead of skipping it.
        exclude_queries: queries to drop (e.g. the training queries, when loading a
            held-out file); compared after normalisation.

    Raises:
        DataNotFoundError: the file does not exist.
        TrainingDataError: ``strict`` and some rows are bad, or no valid row is left.

    Example:
        >>> ds = load_rationale_sft("med-rationales/val.jsonl", strict=True)  # doctest: +SKIP
    """
    if min_words < 1 or max_words < min_words:
        raise InvalidInputError(
            f"need 1 <= min_words <= max_words, got {min_words} and {max_words}"
        )
    p = _require_file(path, "rationale SFT file")
    excluded_keys = (
        {normalize_query(q) for q in exclude_queries} if exclude_queries is not None else set()
    )
    examples: list[RationaleExample] = []
    rejected: list[RowProblem] = []
    duplicates: list[RowProblem] = []
    excluded: list[RowProblem] = []
    seen: dict[str, int] = {}
    for line_no, obj, error in _iter_jsonl(p):
        if error is not None:
            rejected.append(RowProblem(str(p), line_no, error))
            continue
        checked = _check_rationale_row(obj, min_words, max_words)
        if isinstance(checked, str):
            rejected.append(RowProblem(str(p), line_no, checked))
            continue
        query, rationales = checked
        key = normalize_query(query)
        if key in excluded_keys:
            excluded.append(RowProblem(str(p), line_no, "query is in exclude_queries"))
            continue
        if dedupe and key in seen:
            duplicates.append(
                RowProblem(str(p), line_no, f"duplicate query (first seen on line {seen[key]})")
            )
            continue
        seen.setdefault(key, line_no)
        row_id = obj.get("id")
        text = obj.get("text")
        examples.append(
            RationaleExample(
                id=str(row_id) if row_id is not None else f"{p.name}:{line_no}",
                query=query,
                rationales=tuple(rationales),
                line=line_no,
                text=text if isinstance(text, str) else None,
            )
        )
    if rejected:
        if strict:
            raise TrainingDataError(
                _problem_message(
                    str(p), rejected, "Fix these rows, or pass strict=False to skip them."
                )
            )
        logger.warning(
            "%s: skipped %d bad row(s); first: %s",
            p.name,
            len(rejected),
            "; ".join(str(r) for r in rejected[:3]),
        )
    if duplicates:
        logger.info(
            "%s: dropped %d duplicate quer%s",
            p.name,
            len(duplicates),
            "y" if len(duplicates) == 1 else "ies",
        )
    if excluded:
        logger.info(
            "%s: excluded %d row(s) whose query is in exclude_queries", p.name, len(excluded)
        )
    if not examples:
        first = "; first: " + "; ".join(str(r) for r in rejected[:3]) if rejected else ""
        raise TrainingDataError(
            f"{p} has no valid rationale rows ({len(rejected)} rejected{first}); check the file format"
        )
    return SFTDataset(examples, rejected, duplicates, excluded, p, file_sha256(p))
