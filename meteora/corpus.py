"""Reading passage collections from files (JSONL, JSON list, or plain text).

* ``.jsonl``: one JSON object per line with at least ``text`` (optional ``id``,
  ``doc_id``, ``position``, ``metadata``) — or a bare JSON string per line.
* ``.json``: a list of such objects or strings.
* anything else: plain text, one passage per non-empty line.

Errors name the file and the 1-based line number.

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
from pathlib import Path
from typing import Any

from meteora._checks import decode_line, is_blank
from meteora.errors import InvalidInputError
from meteora.types import Passage, passage_from

__all__ = ["read_passages"]


def _jsonl_items(path: Path) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
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


def _decode_whole(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidInputError(
            f"{path}:{lineno}: not valid UTF-8 (byte {data[exc.start]:#04x} at column {column}); save the file as UTF-8"
        ) from exc
    return text[1:] if text.startswith("\ufeff") else text


def _json_items(path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(_decode_whole(path))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, list):
        raise InvalidInputError(f"{path}: expected a JSON list of passages, got {type(data).__name__}")
    return [(f"{path}: item #{i}", obj) for i, obj in enumerate(data)]


def _text_items(path: Path) -> list[tuple[str, Any]]:
    lines = _decode_whole(path).split("\n")
    return [(f"{path}:{n}", line.rstrip("\r")) for n, line in enumerate(lines, 1) if not is_blank(line)]


def read_passages(path: str | os.PathLike[str]) -> list[Passage]:
    """Load passages from ``path`` (see the module docstring for formats).

    Raises:
        InvalidInputError: the file is missing, not UTF-8, not valid JSON, or a row is
            bad (no text, empty text, non-string text, bad id/position/metadata,
            duplicate id); the message names ``file:line`` (``file: item #i`` in a
            ``.json`` list).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"passage file {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        items = _jsonl_items(path)
    elif path.suffix == ".json":
        items = _json_items(path)
    else:
        items = _text_items(path)
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
