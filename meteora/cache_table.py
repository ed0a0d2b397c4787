"""The file part of meteora's cache: :class:`SQLiteTable`, one table of an SQLite file.

Several threads (a connection each) and processes (WAL mode, a busy timeout, every write
one transaction) share the file. A :class:`TableLayout` says how one cache's keys and
values become rows. Files are handled with care: a file that is not an SQLite database,
or a database of another program, is refused untouched (the layout's error); a damaged
cache file (unreadable pages, a truncated copy, another schema version) is moved aside
to ``<name>.corrupt-<time>-<pid>`` with a warning and a fresh one is started — a broken
cache costs recomputation, never a crash or another program's data.

Example:
    >>> from meteora.rationales.cache import LAYOUT
    >>> LAYOUT.table, LAYOUT.key_columns
    ('rationales', ('key',))
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meteora.errors import MeteoraError

__all__ = ["SQLiteTable", "TableLayout", "SQLITE_HEADER", "is_corruption"]

logger = logging.getLogger(__name__)

#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0
_CHUNK = 400  # keys per IN (...) query; sqlite's host-parameter limit is 999 on old builds


@dataclass(frozen=True)
class TableLayout:
    """How one cache's keys and values are stored in an SQLite table.

    Attributes:
        label: what the cache is called in messages (``"rationale cache"``).
        table: the table holding the entries.
        ddl: ``CREATE ... IF NOT EXISTS`` statements for it (and its indexes).
        meta: rows of the ``meta`` table (``schema_version`` must be among them).
        key_columns: the columns a key is stored in (a key is a tuple of that length
            when there are several).
        value_columns: the columns :attr:`from_row` reads.
        insert: the ``INSERT`` statement :attr:`to_row` fills.
        to_row: ``(key, value, now) -> parameters of insert``.
        from_row: ``value columns -> value``, or ``None`` for a malformed row.
        owns: ``(tables, meta) -> bool``: whether an existing database is this cache.
        used_column: a column holding the last use time (then reads touch it and the
            file can be bounded), or ``None``.
        drop_unreadable: delete rows :attr:`from_row` cannot read (else they are only
            skipped).
        refuse_non_sqlite: ``(path) -> error`` raised for a non-SQLite file.
        refuse_foreign: ``(path, tables) -> error`` raised for another program's database.
        unusable: ``(path, exc) -> error`` raised when the file cannot be used at all.
        quarantine_non_sqlite: ``(path) -> bool``: a non-SQLite file at this path is a
            damaged cache of ours (moved aside) rather than a user's file (refused).
        logger: where warnings go.
    """

    label: str
    table: str
    ddl: tuple[str, ...]
    meta: dict[str, str]
    key_columns: tuple[str, ...]
    value_columns: tuple[str, ...]
    insert: str
    to_row: Callable[[Any, Any, float], tuple]
    from_row: Callable[[tuple], Any]
    owns: Callable[[set[str], dict[str, str]], bool]
    refuse_non_sqlite: Callable[[Path], MeteoraError]
    refuse_foreign: Callable[[Path, list[str]], MeteoraError]
    unusable: Callable[[Path, BaseException], MeteoraError]
    used_column: str | None = None
    drop_unreadable: bool = False
    quarantine_non_sqlite: Callable[[Path], bool] = field(default=lambda path: False)
    logger: logging.Logger = logger


def is_corruption(exc: BaseException) -> bool:
    """A damaged file ("file is not a database", "malformed"), not a lock or I/O problem."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if not isinstance(exc, sqlite3.OperationalError):
        return True
    msg = str(exc).lower()
    return "malformed" in msg or "not a database" in msg or "corrupt" in msg


class _Retry(Exception):
    """Internal: the file was moved aside; run the operation again on a fresh one."""


class SQLiteTable:
    """One cache table in an SQLite file, shared by threads (a connection each) and
    processes (WAL, busy timeout); see the module doc for how files are treated.

    Raises:
        MeteoraError: the layout's errors for a foreign or unusable file.
    """

    def __init__(self, path: str | os.PathLike[str], layout: TableLayout) -> None:
        self.path = Path(path)
        self.layout = layout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0  # bumped when the file is replaced, so threads reconnect
        self._refuse_foreign()
        self._open_checked()

    # -- opening -------------------------------------------------------------------------
    def _refuse_foreign(self) -> None:
        """Refuse a file that is not this cache, reading it only (nothing is created)."""
        lay, path = self.layout, self.path
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except (FileNotFoundError, IsADirectoryError):
            return
        except OSError as exc:
            raise lay.unusable(path, exc) from exc
        if head != SQLITE_HEADER:
            if not head or lay.quarantine_non_sqlite(path):
                return  # empty, or our own damaged file: moved aside when opened
            raise lay.refuse_non_sqlite(path)
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                meta: dict[str, str] = {}
                if "meta" in tables:
                    meta = {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM meta")}
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return  # unreadable: the corruption handling decides
        if tables and not lay.owns(tables, meta):
            raise lay.refuse_foreign(path, sorted(tables))

    def _connect(self) -> sqlite3.Connection:
        lay = self.layout
        conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                lay.logger.debug("%s %s: WAL mode not available (%s)", lay.label, self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                for statement in lay.ddl:
                    conn.execute(statement)
                conn.executemany("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", list(lay.meta.items()))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            meta = {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM meta")}
            if any(meta.get(k) != v for k, v in lay.meta.items()):
                raise sqlite3.DatabaseError(f"unsupported {lay.label} schema {meta.get('schema_version')!r}")
            # reads every page of the table: a damaged file shows up here, not mid-query
            conn.execute(f"SELECT count(*) FROM {lay.table}").fetchone()
            return conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise

    def _quarantine(self, exc: BaseException) -> None:
        """Move the unreadable file (and its WAL/SHM) aside."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        self.layout.logger.warning(
            "%s %s is unreadable (%s); moved it to %s and starting a new one (its entries will be computed again)",
            self.layout.label, self.path, exc, target,
        )
        try:
            os.replace(self.path, target)
        except FileNotFoundError:
            pass
        except OSError as move_exc:
            raise self.layout.unusable(self.path, move_exc) from move_exc
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                os.replace(self.path.with_name(self.path.name + suffix), target.with_name(target.name + suffix))

    def _open_checked(self) -> sqlite3.Connection:
        with self._lock:
            try:
                conn = self._connect()
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise self.layout.unusable(self.path, exc) from exc
                self._quarantine(exc)
                self._generation += 1
                try:
                    conn = self._connect()
                except sqlite3.Error as exc2:
                    raise self.layout.unusable(self.path, exc2) from exc2
            self._local.conn = conn
            self._local.generation = self._generation
            return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", -1) != self._generation:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            conn = self._open_checked()
        return conn

    # -- running -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise self.layout.unusable(self.path, exc) from exc
            with self._lock:
                self._quarantine(exc)
                self._generation += 1
            raise _Retry() from exc

    def run(self, op: Callable[[sqlite3.Connection], Any], *, write: bool = False) -> Any:
        """``op(connection)``, in one transaction when ``write``; a damaged file is moved
        aside and the operation runs once more on a fresh one."""
        for attempt in range(2):
            try:
                with self._guard() as conn:
                    if not write:
                        return op(conn)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = op(conn)
                        conn.execute("COMMIT")
                        return result
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
            except _Retry:
                if attempt == 1:
                    raise self.layout.unusable(self.path, RuntimeError("damaged twice in a row")) from None
        raise AssertionError("unreachable")

    def _where(self, keys: Sequence[Any]) -> Iterator[tuple[str, list[Any], list[Any]]]:
        """``(WHERE clause, parameters, keys)`` per chunk; keys with several columns are
        grouped by all but the last."""
        cols = self.layout.key_columns
        groups: dict[tuple, list[Any]] = {}
        for key in keys:
            parts = key if len(cols) > 1 else (key,)
            groups.setdefault(tuple(parts[:-1]), []).append(key)
        for prefix, members in groups.items():
            for start in range(0, len(members), _CHUNK):
                chunk = members[start : start + _CHUNK]
                lasts = [k[-1] if len(cols) > 1 else k for k in chunk]
                clause = " AND ".join(f"{c} = ?" for c in cols[:-1])
                clause = (clause + " AND " if clause else "") + f"{cols[-1]} IN ({','.join('?' * len(chunk))})"
                yield clause, [*prefix, *lasts], chunk

    def get_many(self, keys: Sequence[Any]) -> dict[Any, Any]:
        """The stored values of the keys found (malformed rows are dropped)."""
        lay = self.layout
        cols = lay.key_columns
        select = ", ".join((*cols, *lay.value_columns))

        def op(conn: sqlite3.Connection) -> tuple[dict[Any, Any], list[Any]]:
            found: dict[Any, Any] = {}
            bad: list[Any] = []
            for clause, params, _ in self._where(list(dict.fromkeys(keys))):
                for row in conn.execute(f"SELECT {select} FROM {lay.table} WHERE {clause}", params):
                    key = tuple(row[: len(cols)]) if len(cols) > 1 else row[0]
                    value = lay.from_row(tuple(row[len(cols) :]))
                    (bad.append(key) if value is None else found.__setitem__(key, value))
            return found, bad

        found, bad = self.run(op)
        if bad:
            lay.logger.warning("%s %s: %d unreadable entries ignored", lay.label, self.path, len(bad))
        if (lay.used_column is not None and found) or (bad and lay.drop_unreadable):
            self._touch_and_drop(list(found), bad if lay.drop_unreadable else [])
        return found

    def put_many(self, items: Sequence[tuple[Any, Any]]) -> int:
        """Store ``(key, value)`` pairs in one transaction; return how many rows are new."""
        lay = self.layout
        now = time.time()
        rows = [lay.to_row(key, value, now) for key, value in items]
        if not rows:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(lay.insert, rows)
            added = conn.total_changes - before
            if lay.used_column is not None:  # a row that was there already counts as used now
                self._touch(conn, [key for key, _ in items], now)
            return added

        return int(self.run(op, write=True))

    def _where_one(self) -> str:
        return " AND ".join(f"{c} = ?" for c in self.layout.key_columns)

    def _params(self, key: Any) -> tuple:
        return tuple(key) if len(self.layout.key_columns) > 1 else (key,)

    def _touch(self, conn: sqlite3.Connection, keys: Sequence[Any], now: float) -> None:
        conn.executemany(
            f"UPDATE {self.layout.table} SET {self.layout.used_column} = ? WHERE {self._where_one()}",
            [(now, *self._params(k)) for k in keys],
        )

    def _touch_and_drop(self, keys: Sequence[Any], drop: Sequence[Any]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if self.layout.used_column is not None:
                self._touch(conn, keys, time.time())
            conn.executemany(f"DELETE FROM {self.layout.table} WHERE {self._where_one()}", [self._params(k) for k in drop])

        self.run(op, write=True)

    def count(self) -> int:
        """Rows in the table (every process's)."""
        return int(self.run(lambda conn: conn.execute(f"SELECT count(*) FROM {self.layout.table}").fetchone()[0]))

    def evict(self, limit: int) -> int:
        """Delete the least recently used rows beyond ``limit``; return how many went."""
        lay = self.layout
        cols = ", ".join(lay.key_columns)

        def op(conn: sqlite3.Connection) -> int:
            extra = int(conn.execute(f"SELECT count(*) FROM {lay.table}").fetchone()[0]) - limit
            if extra <= 0:
                return 0
            conn.execute(
                f"DELETE FROM {lay.table} WHERE ({cols}) IN "
                f"(SELECT {cols} FROM {lay.table} ORDER BY {lay.used_column}, {cols} LIMIT ?)",
                (extra,),
            )
            return extra

        return int(self.run(op, write=True))

    def clear(self) -> None:
        """Delete every row (the file stays)."""
        self.run(lambda conn: conn.execute(f"DELETE FROM {self.layout.table}"), write=True)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None
