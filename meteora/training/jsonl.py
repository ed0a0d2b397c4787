"""JSON Lines files of training data: line-numbered reading, atomic writing, file digests.

Every problem found in a file is a :class:`RowProblem` naming the file and the 1-based
line, so a loader can collect *all* bad rows before it decides to raise
:class:`~meteora.errors.TrainingDataError` (listing them) or to skip them.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> write_jsonl_atomic(p, [{"q": "a"}, {"q": "b"}])
    >>> read_jsonl(p)
    [{'q': 'a'}, {'q': 'b'}]
    >>> str(RowProblem(str(p), 3, "invalid JSON"))
    'rows.jsonl:3: invalid JSON'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora._io import atomic_write_text
from meteora.errors import DataNotFoundError, TrainingDataError

__all__ = ["RowProblem", "file_sha256", "read_jsonl", "write_jsonl_atomic"]

_MAX_LISTED = 25


@dataclass(frozen=True)
class RowProblem:
    """One bad (or skipped) row: where it is and what is wrong with it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{Path(self.path).name}:{self.line}: {self.reason}"


def _problem_message(what: str, problems: Sequence[RowProblem], hint: str) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"{len(problems)} bad row(s) in {what}:\n{shown}{more}\n{hint}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file (recorded with every trained adapter)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataNotFoundError(
            f"{what} {str(p)!r} does not exist (or is not a file); check the path"
        )
    return p


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line_no, obj, error)`` for each non-blank line; ``error`` set when unparsable."""
    with open(path, "rb") as fh:
        for line_no, data in enumerate(fh, start=1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, None, f"not valid UTF-8 (byte {data[exc.start]:#04x} at column {exc.start + 1}); save the file as UTF-8"
                continue
            if line_no == 1 and raw.startswith("\ufeff"):
                raw = raw[1:]
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw), None
            except json.JSONDecodeError as exc:
                yield line_no, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON Lines file (blank lines are skipped).

    Raises:
        DataNotFoundError: the file does not exist.
        TrainingDataError: some lines are not valid JSON; every one is listed as
            ``file:line: reason``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
        >>> write_jsonl_atomic(p, [{"a": 1}, {"a": 2}])
        >>> read_jsonl(p)
        [{'a': 1}, {'a': 2}]
    """
    p = _require_file(path, "JSONL file")
    rows: list[Any] = []
    problems: list[RowProblem] = []
    for line_no, obj, error in _iter_jsonl(p):
        if error is not None:
            problems.append(RowProblem(str(p), line_no, error))
        else:
            rows.append(obj)
    if problems:
        raise TrainingDataError(_problem_message(str(p), problems, "Fix or remove these lines."))
    return rows


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Any]) -> None:
    """Write ``rows`` as JSON Lines (UTF-8, one object per line) atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
