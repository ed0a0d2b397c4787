"""Reading passage collections from files (JSONL, JSON list, or plain text).

* ``.jsonl``: one JSON object per line with at least ``text`` (optional ``id``,
  ``doc_id``, ``position``, ``metadata``) — or a bare JSON string per line.
* ``.json``: a list of such objects or strings.
* ``.parquet``: one row per passage, a ``text`` column and optionally ``id``,
  ``doc_id``, ``position``, ``metadata`` (a struct); other columns go to the metadata,
  and a null cell counts as absent (needs ``pyarrow``: the ``parquet`` extra).
* anything else: plain text, one passage per non-empty line.
* ``-``: standard input, in whichever of these it is: a JSON list when its first
  visible character is ``[``, JSONL when it is ``{`` or ``"``, else plain text.

:func:`read_passages` returns the whole list; :func:`iter_passage_chunks` yields it a
chunk at a time (JSONL and Parquet are read incrementally: a streaming index build
never holds the corpus). Errors name the file (``<stdin>`` for standard input) and the
1-based line (or row) number.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
    >>> _ = p.write_text('{"id": "a", "text": "Aspirin."}\\n{"text": "Fever."}\\n')
    >>> [x.id for x in read_passages(p)]
    ['a', '1']
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from meteora._checks import decode_line, is_blank
from meteora.errors import InvalidInputError
from meteora.types import Passage, passage_from

__all__ = ["read_passages", "iter_passage_chunks", "parse_jsonl_line", "parquet_row", "checked_passage", "STDIN_NAME"]

#: how standard input is named in messages (``<stdin>:3: ...``)
STDIN_NAME = "<stdin>"


def _jsonl_items(path: Any, lines: Iterable[bytes]) -> Iterator[tuple[str, Any]]:
    for lineno, raw in enumerate(lines, 1):
        obj = parse_jsonl_line(raw, path, lineno)
        if obj is not None:
            yield f"{path}:{lineno}", obj


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as fh:
        yield from _jsonl_items(path, fh)


def parse_jsonl_line(raw: bytes, path: Any, lineno: int) -> Any:
    """One line of a JSONL corpus: an object with ``text`` or a string, ``None`` for a
    blank line (also used by :mod:`meteora.distributed` on each worker's lines).

    Raises:
        InvalidInputError: not UTF-8, not JSON, or not a passage, naming ``path:lineno``.

    Example:
        >>> parse_jsonl_line(b'{"text": "a"}\\n', "c.jsonl", 1)
        {'text': 'a'}
    """
    line = decode_line(raw, path, lineno)
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object"
        ) from exc
    if not isinstance(obj, (dict, str)):
        raise InvalidInputError(
            f"{path}:{lineno}: expected an object with 'text' or a string, got {type(obj).__name__}"
        )
    if isinstance(obj, dict) and "text" not in obj:
        raise InvalidInputError(f"{path}:{lineno}: object has no 'text' field (keys: {sorted(obj)})")
    return obj


def _iter_parquet(path: Path, batch_rows: int) -> Iterator[tuple[str, Any]]:
    from meteora.errors import require

    pq = require("pyarrow.parquet", "parquet", "reading Parquet corpora")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError types
        raise InvalidInputError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "text" not in pf.schema_arrow.names:
        raise InvalidInputError(f"{path}: no 'text' column (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}: row {row}", parquet_row(obj)


def _decode_whole(path: Any, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidInputError(
            f"{path}:{lineno}: not valid UTF-8 (byte {data[exc.start]:#04x} at column {column}); save the file as UTF-8"
        ) from exc
    return text[1:] if text.startswith("\ufeff") else text


def _json_items(path: Any, data: bytes) -> list[tuple[str, Any]]:
    try:
        parsed = json.loads(_decode_whole(path, data))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(parsed, list):
        raise InvalidInputError(f"{path}: expected a JSON list of passages, got {type(parsed).__name__}")
    return [(f"{path}: item #{i}", obj) for i, obj in enumerate(parsed)]


def _text_items(path: Any, data: bytes) -> list[tuple[str, Any]]:
    lines = _decode_whole(path, data).split("\n")
    return [(f"{path}:{n}", line.rstrip("\r")) for n, line in enumerate(lines, 1) if not is_blank(line)]


def _stdin_items(data: bytes) -> list[tuple[str, Any]]:
    """Standard input's passages, its format told by its first visible character."""
    name = STDIN_NAME
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head == b"[":
        return _json_items(name, data)
    if head in (b"{", b'"'):
        return list(_jsonl_items(name, data.splitlines(keepends=True)))
    return _text_items(name, data)


def _file_items(path: Path) -> list[tuple[str, Any]]:
    if path.suffix == ".jsonl":
        return list(_iter_jsonl(path))
    if path.suffix == ".json":
        return _json_items(path, path.read_bytes())
    if path.suffix == ".parquet":
        return list(_iter_parquet(path, 10_000))
    return _text_items(path, path.read_bytes())


def parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row as a corpus item: a null cell counts as absent."""
    return {k: v for k, v in row.items() if v is not None}


def read_passages(path: str | os.PathLike[str]) -> list[Passage]:
    """Load passages from ``path``, or from standard input when it is ``"-"`` (see the
    module docstring for formats).

    Raises:
        InvalidInputError: the file is missing, not UTF-8, not valid JSON, or a row is
            bad (no text, empty text, non-string text, bad id/position/metadata,
            duplicate id); the message names ``file:line`` (``file: item #i`` in a
            ``.json`` list).
    """
    if str(path) == "-":
        items = _stdin_items(sys.stdin.buffer.read())
        path = STDIN_NAME
    else:
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"passage file {str(path)!r} does not exist")
        items = _file_items(path)
    if not items:
        raise InvalidInputError(f"{path} holds no passages")
    out: list[Passage] = []
    seen: dict[str, str] = {}
    for i, (where, obj) in enumerate(items):
        p = checked_passage(obj, i, where)
        if p.id in seen:
            raise InvalidInputError(
                f"{where}: duplicate passage id {p.id!r} (first at {seen[p.id]}); ids must be unique"
            )
        seen[p.id] = where
        out.append(p)
    return out


def checked_passage(obj: Any, index: int, where: str) -> Passage:
    """A passage from a parsed corpus item, refused when its text is blank (``index``: the
    default id)."""
    p = passage_from(obj, index, where=where)
    if is_blank(p.text):
        raise InvalidInputError(f"{where}: passage {p.id!r} has empty text (nothing visible); remove it or give it text")
    return p


def iter_passage_chunks(
    path: str | os.PathLike[str], chunk_size: int = 10_000
) -> Iterator[tuple[list[Passage], list[str]]]:
    """Passages of ``path`` in order, ``chunk_size`` at a time, with where each came from
    (``file:line``, for error messages), each checked as :func:`read_passages` checks it
    (ids default to the 0-based item number).

    JSONL and Parquet are read incrementally; other formats are read whole first.
    Duplicate ids are not checked here: the passage store refuses them as it writes.

    Raises:
        InvalidInputError: as :func:`read_passages`.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
        >>> _ = p.write_text('{"text": "a"}\\n{"text": "b"}\\n{"text": "c"}\\n')
        >>> [[x.id for x in chunk] for chunk, _ in iter_passage_chunks(p, chunk_size=2)]
        [['0', '1'], ['2']]
    """
    path = Path(path)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not path.is_file():
        raise InvalidInputError(f"passage file {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        items: Iterator[tuple[str, Any]] = _iter_jsonl(path)
    elif path.suffix == ".parquet":
        items = _iter_parquet(path, chunk_size)
    else:
        items = iter(_file_items(path))
    chunk: list[Passage] = []
    where: list[str] = []
    count = 0
    for at, obj in items:
        chunk.append(checked_passage(obj, count, at))
        where.append(at)
        count += 1
        if len(chunk) == chunk_size:
            yield chunk, where
            chunk, where = [], []
    if chunk:
        yield chunk, where
    if count == 0:
        raise InvalidInputError(f"{path} holds no passages")
