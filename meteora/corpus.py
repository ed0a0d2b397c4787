"""Reading passage collections from files (JSONL, JSON list, or plain text).

* ``.jsonl``: one JSON object per line with at least ``text`` (optional ``id``,
  ``doc_id``, ``position``, ``metadata``) — or a bare JSON string per line.
* ``.json``: a list of such objects or strings.
* anything else: plain text, one passage per non-empty line.
* ``-``: standard input, in whichever of these it is: a JSON list when its first
  visible character is ``[``, JSONL when it is ``{`` or ``"``, else plain text.

Errors name the file (``<stdin>`` for standard input) and the 1-based line number.

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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meteora._checks import decode_line, is_blank
from meteora.errors import InvalidInputError
from meteora.types import Passage, passage_from

__all__ = ["read_passages", "STDIN_NAME"]

#: how standard input is named in messages (``<stdin>:3: ...``)
STDIN_NAME = "<stdin>"


def _jsonl_items(path: Any, lines: Iterable[bytes]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for lineno, raw in enumerate(lines, 1):
        line = decode_line(raw, path, lineno)
        if not line.strip():
            continue
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
        items.append((f"{path}:{lineno}", obj))
    return items


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
        return _jsonl_items(name, data.splitlines(keepends=True))
    return _text_items(name, data)


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
        if path.suffix == ".jsonl":
            with open(path, "rb") as fh:
                items = _jsonl_items(path, fh)
        elif path.suffix == ".json":
            items = _json_items(path, path.read_bytes())
        else:
            items = _text_items(path, path.read_bytes())
    if not items:
        raise InvalidInputError(f"{path} holds no passages")
    out: list[Passage] = []
    seen: dict[str, str] = {}
    for i, (where, obj) in enumerate(items):
        p = passage_from(obj, i, where=where)
        if is_blank(p.text):
            raise InvalidInputError(f"{where}: passage {p.id!r} has empty text (nothing visible); remove it or give it text")
        if p.id in seen:
            raise InvalidInputError(
                f"{where}: duplicate passage id {p.id!r} (first at {seen[p.id]}); ids must be unique"
            )
        seen[p.id] = where
        out.append(p)
    return out
