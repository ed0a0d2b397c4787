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

from meteora.errors import InvalidInputError
from meteora.types import Passage, to_passages

__all__ = ["read_passages"]


def read_passages(path: str | os.PathLike[str]) -> list[Passage]:
    """Load passages from ``path`` (see the module docstring for formats)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"passage file {str(path)!r} does not exist")
    items: list = []
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
                if not isinstance(obj, (dict, str)):
                    raise InvalidInputError(f"{path}:{lineno}: expected an object with 'text' or a string, got {type(obj).__name__}")
                if isinstance(obj, dict) and "text" not in obj:
                    raise InvalidInputError(f"{path}:{lineno}: object has no 'text' field (keys: {sorted(obj)})")
                items.append(obj)
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(data, list):
            raise InvalidInputError(f"{path}: expected a JSON list of passages, got {type(data).__name__}")
        items = data
    else:
        items = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise InvalidInputError(f"{path} holds no passages")
    try:
        return to_passages(items)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from exc
