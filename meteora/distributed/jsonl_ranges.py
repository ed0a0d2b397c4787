"""JSONL corpus files read on Ray as byte ranges that start and end on line boundaries.

Ray's file readers give one read task per file, so one large ``.jsonl`` file is read
whole by one task (the file's bytes in one worker's memory) and comes out as one block,
which one encoder actor then embeds alone. This source cuts every file into
ranges of about ``range_bytes`` instead, each ending just after a newline, and knows the
line number each range starts at (one sequential pass over the file on the driver, to
count newlines: about as fast as the disk reads), so every read task parses its own
range, blocks stay small, the actor pool shares the encoding, and errors still name
``file:line`` exactly as a single-machine build does (:func:`jsonl_datasource`).

Each range's rows are canonical JSON records, in file order, with the columns the build
reads (``path``, ``line``, ``record``, ``error``): an item that fails to parse becomes an
``error`` that the driver raises at the item's place.

Example:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "c.jsonl")
    >>> _ = open(f, "w").write('{"text": "a"}\\n\\n{"text": "b"}\\n{"text": "c"}\\n')
    >>> [(r.start, r.end, r.first_line) for r in line_ranges(f, 16)]
    [(0, 29, 1), (29, 43, 4)]
    >>> jsonl_rows(f, line_ranges(f, 16)[1])["line"]
    [4]
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meteora.corpus import parse_jsonl_line
from meteora.errors import MeteoraError

__all__ = ["LineRange", "line_ranges", "jsonl_rows", "auto_range_bytes", "jsonl_datasource"]

#: bytes read at a time while counting newlines or looking for the next one
_READ = 1 << 22
#: the smallest and largest automatic range (see :func:`auto_range_bytes`)
MIN_RANGE_BYTES = 1 << 16
MAX_RANGE_BYTES = 1 << 26


@dataclass(frozen=True)
class LineRange:
    """Bytes ``[start, end)`` of a file: whole lines, the first numbered ``first_line``."""

    start: int
    end: int
    first_line: int


def auto_range_bytes(total_bytes: int, blocks: int = 16) -> int:
    """A range size giving about ``blocks`` ranges, within 64 KiB – 64 MiB.

    Example:
        >>> auto_range_bytes(10 << 30), auto_range_bytes(1 << 20)
        (67108864, 65536)
    """
    return int(min(max(total_bytes // max(blocks, 1), MIN_RANGE_BYTES), MAX_RANGE_BYTES))


def _next_line_start(fh: Any, pos: int, size: int) -> int:
    """The offset just after the first newline at or after ``pos`` (``size`` if none)."""
    fh.seek(pos)
    while pos < size:
        block = fh.read(_READ)
        if not block:
            break
        at = block.find(b"\n")
        if at >= 0:
            return pos + at + 1
        pos += len(block)
    return size


def _count_newlines(fh: Any, start: int, end: int) -> int:
    fh.seek(start)
    count, left = 0, end - start
    while left > 0:
        block = fh.read(min(_READ, left))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def line_ranges(path: str | os.PathLike[str], range_bytes: int) -> list[LineRange]:
    """Cut ``path`` into ranges of about ``range_bytes`` (at least one line each), each
    with the number of its first line."""
    if range_bytes < 1:
        raise ValueError(f"range_bytes must be positive, got {range_bytes}")
    size = os.path.getsize(path)
    out: list[LineRange] = []
    start, line = 0, 1
    with open(path, "rb") as fh:
        while start < size:
            end = _next_line_start(fh, start + range_bytes - 1, size) if start + range_bytes < size else size
            out.append(LineRange(start, end, line))
            line += _count_newlines(fh, start, end)
            start = end
    return out


def jsonl_rows(path: str, part: LineRange) -> dict[str, list[Any]]:
    """Parse one range: one row per non-blank line (split on ``\\n`` as Python reads a
    file), its canonical JSON record or the error to raise at its place."""
    with open(path, "rb") as fh:
        fh.seek(part.start)
        data = fh.read(part.end - part.start)
    pieces = data.split(b"\n")
    raw_lines = [p + b"\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    rows: dict[str, list[Any]] = {"path": [], "line": [], "record": [], "error": []}
    for offset, raw in enumerate(raw_lines):
        lineno = part.first_line + offset
        try:
            obj = parse_jsonl_line(raw, path, lineno)
            record, error = ("" if obj is None else json.dumps(obj)), ""
        except MeteoraError as exc:
            obj, record, error = {}, "", str(exc)
        if obj is not None:
            rows["path"].append(path)
            rows["line"].append(lineno)
            rows["record"].append(record)
            rows["error"].append(error)
    return rows


def _read_task_fn(path: str, part: LineRange) -> Any:
    def read() -> list[Any]:
        import pyarrow as pa

        rows = jsonl_rows(path, part)
        schema = pa.schema([("path", pa.string()), ("line", pa.int64()), ("record", pa.large_string()),
                            ("error", pa.string())])
        return [pa.table(rows, schema=schema)]

    return read


@functools.cache
def _datasource_class() -> type:
    """The ``ray.data.Datasource`` subclass, defined on first use (this module imports
    without Ray)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class JsonlRanges(Datasource):
        """JSONL files as line-aligned byte ranges: one read task per range."""

        def __init__(self, parts: list[tuple[str, LineRange]], size_bytes: int) -> None:
            super().__init__()
            self.parts = parts
            self.size_bytes = size_bytes

        def get_name(self) -> str:
            return "JsonlRanges"

        def estimate_inmemory_data_size(self) -> int | None:
            return self.size_bytes

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            return [
                ReadTask(_read_task_fn(path, part),
                         BlockMetadata(num_rows=None, size_bytes=part.end - part.start, exec_stats=None,
                                       input_files=(path,)),
                         per_task_row_limit=per_task_row_limit)
                for path, part in self.parts
            ]

    return JsonlRanges


def jsonl_datasource(paths: Sequence[str | os.PathLike[str]], range_bytes: int | None = None) -> Any:
    """A Ray ``Datasource`` over JSONL ``paths`` read as line-aligned byte ranges of about
    ``range_bytes`` (``None``: :func:`auto_range_bytes` of their total size); read it with
    ``ray.data.read_datasource``.

    Example:
        >>> ds = ray.data.read_datasource(jsonl_datasource(["c.jsonl"]))  # doctest: +SKIP
    """
    sizes = [os.path.getsize(p) for p in paths]
    size = range_bytes or auto_range_bytes(sum(sizes))
    parts = [(str(p), r) for p in paths for r in line_ranges(p, size)]
    return _datasource_class()(parts, sum(sizes))
