"""Where a retriever keeps its passages: in memory, or in a SQLite file on disk.

A retriever finds passages three ways: by corpus row (a search hit), by id
(``get_passage``, ``embeddings_for``) and by ``(doc_id, position)`` (the neighbours that
expansion may add, :meth:`PassageStore.neighbours`). Two stores answer all three:

* :class:`MemoryPassages` — a list, built by ``retriever.index(passages)``;
* :class:`SqlitePassages` — ``passages.sqlite`` in a saved index version, opened
  read-only (``immutable``) when the index is loaded. Nothing is read until asked: a
  loaded index of 1 M passages holds no passage text in memory, and a search reads only
  its hits' rows. Rows are the table's integer primary key (a B-tree lookup), ids have a
  unique index, and ``(doc_id, position, row)`` a covering index for neighbours.

:class:`PassageStoreWriter` writes that file in batches (``add`` per chunk, ``close`` at
the end), so a streaming build never holds the corpus; duplicate ids and metadata that is
not JSON are refused with the offending passage named. SQLite is in the standard library:
why it was chosen over Parquet and LanceDB (measured) is in the README, "Large corpora".

Example:
    >>> import tempfile, pathlib
    >>> from meteora.types import to_passages
    >>> path = pathlib.Path(tempfile.mkdtemp()) / PASSAGE_STORE_NAME
    >>> write_passage_store(path, to_passages([{"id": "a", "text": "x", "doc_id": "d", "position": 0},
    ...                                        {"id": "b", "text": "y", "doc_id": "d", "position": 1}]))
    >>> store = SqlitePassages(path, expected=2)
    >>> store.rows_of(["b"]), store[0].text, [p.id for p in store.neighbours([store[1]], window=1)]
    ([1], 'x', ['a', 'b'])
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from meteora.errors import IndexFormatError, InvalidInputError
from meteora.retrievers.index_files import PASSAGES_NAME, REBUILD_HINT, read_passages
from meteora.types import Passage

__all__ = [
    "PASSAGE_STORE_NAME",
    "PassageStore",
    "MemoryPassages",
    "SqlitePassages",
    "PassageStoreWriter",
    "write_passage_store",
    "save_passages",
    "open_passages",
    "same_ids",
]

PASSAGE_STORE_NAME = "passages.sqlite"
#: ``PRAGMA user_version`` of the store's schema
_SCHEMA_VERSION = 1
#: ``PRAGMA application_id``: "mtrp", so a foreign database is told apart
_APPLICATION_ID = 0x6D747270
#: rows per ``IN (...)`` query (well under SQLite's parameter limit)
_IN_CHUNK = 500
_COLUMNS = "row, id, doc_id, position, text, metadata"


@runtime_checkable
class PassageStore(Protocol):
    """The passages of one index, by row, by id and by ``(doc_id, position)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, row: int) -> Passage: ...

    def __iter__(self) -> Iterator[Passage]: ...

    def take(self, rows: Sequence[int]) -> list[Passage]:
        """The passages at these rows, in the order given."""
        ...

    def rows_of(self, ids: Sequence[str]) -> list[int | None]:
        """The row of each id (``None`` for an id not in the store)."""
        ...

    def neighbours(self, passages: Sequence[Passage], window: int) -> list[Passage]:
        """Chunks of the passages' documents within ``window`` positions of one of them."""
        ...

    def document_sizes(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """How many chunks each of these documents has (0 for a document not stored)."""
        ...


def _ranges(positions: Iterable[int], window: int) -> list[tuple[int, int]]:
    """Merged ``[p - window, p + window]`` intervals, in order."""
    out: list[tuple[int, int]] = []
    for p in sorted(set(positions)):
        lo, hi = p - window, p + window
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _docs_and_ranges(passages: Sequence[Passage], window: int) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each document of ``passages`` (first appearance first) with its position ranges."""
    by_doc: dict[str, list[int]] = {}
    for p in passages:
        by_doc.setdefault(p.doc_id, []).append(p.position)
    return [(doc, _ranges(pos, max(0, int(window)))) for doc, pos in by_doc.items()]


class MemoryPassages:
    """Passages in a list (what ``retriever.index(passages)`` builds).

    Example:
        >>> from meteora.types import to_passages
        >>> m = MemoryPassages(to_passages(["a", "b"]))
        >>> len(m), m.rows_of(["1", "x"])
        (2, [1, None])
    """

    def __init__(self, passages: Sequence[Passage] = ()) -> None:
        self._list: list[Passage] = list(passages)
        self._pos: dict[str, int] = {p.id: i for i, p in enumerate(self._list)}
        self._by_doc: dict[str, list[tuple[int, int]]] | None = None

    def __len__(self) -> int:
        return len(self._list)

    def __getitem__(self, row: int) -> Passage:
        return self._list[row]

    def __iter__(self) -> Iterator[Passage]:
        return iter(self._list)

    def take(self, rows: Sequence[int]) -> list[Passage]:
        lst = self._list
        return [lst[r] for r in rows]

    def rows_of(self, ids: Sequence[str]) -> list[int | None]:
        pos = self._pos
        return [pos.get(i) for i in ids]

    def extend(self, passages: Sequence[Passage]) -> None:
        """Append passages whose ids are new (the caller checked them)."""
        start = len(self._list)
        self._list.extend(passages)
        for i, p in enumerate(passages):
            self._pos[p.id] = start + i
        self._by_doc = None  # rebuilt on the next neighbour lookup

    def _documents(self) -> dict[str, list[tuple[int, int]]]:
        """doc_id -> its chunks' (position, row), by position (built on first use)."""
        if self._by_doc is None:
            by_doc: dict[str, list[tuple[int, int]]] = {}
            for row, p in enumerate(self._list):
                by_doc.setdefault(p.doc_id, []).append((p.position, row))
            for chunks in by_doc.values():
                chunks.sort()
            self._by_doc = by_doc
        return self._by_doc

    def document_sizes(self, doc_ids: Sequence[str]) -> dict[str, int]:
        docs = self._documents()
        return {d: len(docs.get(d, ())) for d in doc_ids}

    def neighbours(self, passages: Sequence[Passage], window: int) -> list[Passage]:
        docs = self._documents()
        out = []
        for doc, ranges in _docs_and_ranges(passages, window):
            for position, row in docs.get(doc, ()):
                if any(lo <= position <= hi for lo, hi in ranges):
                    out.append(self._list[row])
        return out


def _passage_from_row(row: tuple[Any, ...], path: Path) -> Passage:
    try:
        _, pid, doc_id, position, text, metadata = row
        return Passage(
            text=text, id=pid, doc_id=doc_id, position=position,
            metadata=json.loads(metadata) if metadata else {},
        )
    except (ValueError, TypeError, InvalidInputError) as exc:
        raise IndexFormatError(
            f"{path}: row {row[0] if row else '?'} is not a valid passage ({exc}); the index is "
            f"corrupt, {REBUILD_HINT}"
        ) from exc


class SqlitePassages:
    """Passages in a read-only SQLite file, read on demand.

    One connection serves every thread (lookups take a lock; each is a few B-tree
    probes). The file is opened ``immutable``: nothing is written beside it, and a
    loaded index keeps reading its version after a later save removed the folder.

    Raises:
        IndexFormatError: not a meteora passage store, another schema version, or not
            ``expected`` rows.
    """

    def __init__(self, path: str | Path, *, expected: int | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = self._open()
        n = self._count()
        if expected is not None and n != expected:
            raise IndexFormatError(
                f"{self.path} holds {n} passages, the manifest says {expected}; {REBUILD_HINT}"
            )
        self._len = n

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
            app, version = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.path} is not a readable passage store ({exc}); {REBUILD_HINT}") from exc
        if app != _APPLICATION_ID or version != _SCHEMA_VERSION:
            conn.close()
            raise IndexFormatError(
                f"{self.path} is not a meteora passage store of schema {_SCHEMA_VERSION} "
                f"(application_id={app:#x}, user_version={version}); {REBUILD_HINT}"
            )
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"cannot read {self.path} ({exc}); {REBUILD_HINT}") from exc

    def _query_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``sql``'s ``IN ({marks})`` run over ``values`` a chunk at a time (SQLite limits
        the parameters of one statement)."""
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _IN_CHUNK):
            part = list(values[start : start + _IN_CHUNK])
            out.extend(self._query(sql.format(marks=",".join("?" * len(part))), part))
        return out

    def _count(self) -> int:
        rows = self._query("SELECT count(*), coalesce(min(row), 0), coalesce(max(row), -1) FROM passages")
        n, lo, hi = rows[0]
        if lo != 0 or hi != n - 1:
            raise IndexFormatError(f"{self.path}: rows are not numbered 0..{n - 1}; {REBUILD_HINT}")
        return int(n)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "len": self._len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])
        self._lock = threading.Lock()
        self._conn = self._open()
        self._len = state["len"]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, row: int) -> Passage:
        got = self.take([row])
        return got[0]

    def take(self, rows: Sequence[int]) -> list[Passage]:
        rows = [int(r) for r in rows]
        found: dict[int, Passage] = {}
        for row in self._query_in(f"SELECT {_COLUMNS} FROM passages WHERE row IN ({{marks}})", sorted(set(rows))):
            found[row[0]] = _passage_from_row(row, self.path)
        missing = [r for r in rows if r not in found]
        if missing:
            raise IndexError(f"rows {missing[:5]} are not in {self.path} ({self._len} passages)")
        return [found[r] for r in rows]

    def rows_of(self, ids: Sequence[str]) -> list[int | None]:
        found = dict(self._query_in("SELECT id, row FROM passages WHERE id IN ({marks})", list(dict.fromkeys(ids))))
        return [found.get(i) for i in ids]

    def __iter__(self) -> Iterator[Passage]:
        for batch in self.iter_batches():
            yield from batch

    def iter_batches(self, size: int = 10_000) -> Iterator[list[Passage]]:
        """All passages in row order, ``size`` at a time."""
        for start in range(0, self._len, size):
            rows = self._query(
                f"SELECT {_COLUMNS} FROM passages WHERE row >= ? AND row < ? ORDER BY row", (start, start + size)
            )
            yield [_passage_from_row(r, self.path) for r in rows]

    def neighbours(self, passages: Sequence[Passage], window: int) -> list[Passage]:
        rows: list[int] = []
        for doc, ranges in _docs_and_ranges(passages, window):
            for lo, hi in ranges:
                rows.extend(
                    r for (r,) in self._query(
                        "SELECT row FROM passages WHERE doc_id = ? AND position BETWEEN ? AND ? "
                        "ORDER BY position, row",
                        (doc, lo, hi),
                    )
                )
        return self.take(rows)

    def document_sizes(self, doc_ids: Sequence[str]) -> dict[str, int]:
        found = dict(self._query_in(
            "SELECT doc_id, count(*) FROM passages WHERE doc_id IN ({marks}) GROUP BY doc_id", list(dict.fromkeys(doc_ids))
        ))
        return {d: int(found.get(d, 0)) for d in doc_ids}

    def close(self) -> None:
        """Close the file (the store is unusable afterwards)."""
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SqlitePassages({str(self.path)!r}, passages={self._len})"


class PassageStoreWriter:
    """Write a passage store in batches: ``add`` each chunk, then ``close``.

    Rows are numbered from 0 in the order passages are added. A duplicate id, or
    metadata that is not JSON, raises :class:`InvalidInputError` naming the passage (and
    ``where`` it came from, when given). The file is written without a journal: it lives
    in an index version folder that is published only once complete.

    Example:
        >>> import tempfile, pathlib
        >>> from meteora.types import to_passages
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.sqlite"
        >>> with PassageStoreWriter(path) as w:
        ...     w.add(to_passages(["a", "b"]))
        >>> len(SqlitePassages(path))
        2
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise InvalidInputError(f"{self.path} exists; a passage store is written into a new file")
        self._conn = sqlite3.connect(str(self.path))
        self._conn.executescript(
            f"""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            PRAGMA application_id = {_APPLICATION_ID};
            PRAGMA user_version = {_SCHEMA_VERSION};
            CREATE TABLE passages (
                row INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                doc_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                text TEXT NOT NULL,
                metadata TEXT
            );
            """
        )
        self.count = 0

    def add(self, passages: Sequence[Passage], where: Sequence[str] | None = None) -> None:
        """Append ``passages`` (``where``: one description per passage for errors)."""
        records = []
        for i, p in enumerate(passages):
            try:
                meta = json.dumps(dict(p.metadata), ensure_ascii=False, allow_nan=False) if p.metadata else None
            except (TypeError, ValueError) as exc:
                at = f"{where[i]}: " if where else ""
                raise InvalidInputError(
                    f"{at}passage {p.id!r} cannot be saved: its metadata is not JSON-serialisable ({exc}); "
                    "keep metadata to str/int/float/bool/list/dict values"
                ) from exc
            records.append((self.count + i, p.id, p.doc_id, p.position, p.text, meta))
        try:
            with self._conn:
                self._conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?)", records)
        except sqlite3.IntegrityError:
            self._raise_duplicate(passages, where)
        self.count += len(records)

    def _raise_duplicate(self, passages: Sequence[Passage], where: Sequence[str] | None) -> None:
        seen: dict[str, int] = {}
        for i, p in enumerate(passages):
            (first,) = self._conn.execute("SELECT row FROM passages WHERE id = ?", (p.id,)).fetchone() or (None,)
            if first is None and p.id in seen:
                first = self.count + seen[p.id]
            if first is not None:
                at = f"{where[i]}: " if where else ""
                raise InvalidInputError(
                    f"{at}duplicate passage id {p.id!r} (first at passage #{first}); ids must be unique"
                )
            seen[p.id] = i
        raise InvalidInputError("duplicate passage ids in the corpus; ids must be unique")

    def close(self) -> None:
        """Index ``(doc_id, position)`` and close the file."""
        with self._conn:
            self._conn.execute("CREATE INDEX doc_position ON passages (doc_id, position, row)")
        self._conn.close()

    def abort(self) -> None:
        """Close without finishing (the caller removes the file)."""
        self._conn.close()

    def __enter__(self) -> PassageStoreWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_passage_store(path: str | Path, passages: Sequence[Passage], *, batch: int = 10_000) -> None:
    """Write ``passages`` into a new store file at ``path``."""
    with PassageStoreWriter(path) as writer:
        for start in range(0, len(passages), batch):
            writer.add(passages[start : start + batch])


def _id_batches(store: PassageStore, size: int = 10_000) -> Iterator[list[str]]:
    if isinstance(store, SqlitePassages):
        for start in range(0, len(store), size):
            yield [i for (i,) in store._query(
                "SELECT id FROM passages WHERE row >= ? AND row < ? ORDER BY row", (start, start + size)
            )]
    else:
        ids = [p.id for p in store]
        for start in range(0, len(ids), size):
            yield ids[start : start + size]


def same_ids(a: PassageStore, b: PassageStore) -> bool:
    """Whether two stores hold the same ids in the same order (read in batches).

    Example:
        >>> from meteora.types import to_passages
        >>> same_ids(MemoryPassages(to_passages(["x", "y"])), MemoryPassages(to_passages(["z", "w"])))
        True
    """
    if a is b:
        return True
    if len(a) != len(b):
        return False
    return all(x == y for x, y in zip(_id_batches(a), _id_batches(b), strict=True))


def save_passages(directory: Path, store: PassageStore) -> None:
    """Write ``store`` as ``passages.sqlite`` into an index version folder being written
    (a store already on disk is copied as it is)."""
    target = directory / PASSAGE_STORE_NAME
    if isinstance(store, SqlitePassages):
        shutil.copyfile(store.path, target)
    else:
        write_passage_store(target, list(store))


def open_passages(directory: Path, manifest: dict[str, Any], expected: int) -> PassageStore:
    """The passages of a checked index version: ``passages.sqlite`` opened on disk, or the
    ``passages.jsonl`` of an index saved before the store existed, read into memory.

    Raises:
        IndexFormatError: the manifest lists neither, or the store does not hold
            ``expected`` passages.
    """
    files = manifest["files"]
    if PASSAGE_STORE_NAME in files:
        return SqlitePassages(directory / PASSAGE_STORE_NAME, expected=expected)
    if PASSAGES_NAME in files:
        passages = read_passages(directory / PASSAGES_NAME)
        if len(passages) != expected:
            raise IndexFormatError(
                f"{directory / PASSAGES_NAME} holds {len(passages)} passages, the manifest says "
                f"{expected}; {REBUILD_HINT}"
            )
        return MemoryPassages(passages)
    raise IndexFormatError(
        f"{directory} lists no passages ({PASSAGE_STORE_NAME} or {PASSAGES_NAME}) in its manifest; "
        f"{REBUILD_HINT}"
    )
