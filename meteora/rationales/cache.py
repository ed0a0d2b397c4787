"""Persistent rationale cache (sqlite3, JSON values, never pickle).

Generating rationales is the slow part of METEORA (about a second per query for the
small offline model on a CPU), so results are stored by a key that says everything
that changes them: model, adapter, template (name and a hash of its fields),
generation parameters, number of rationales, filters and the query. Benchmark reruns
then read them back instead of regenerating.

* One sqlite file, default ``$METEORA_HOME/rationales.sqlite``, in WAL mode with a
  busy timeout: several processes can read while one writes.
* Keys are the sha256 of the canonical JSON of the key fields plus the query.
* Values are JSON (the :class:`~meteora.rationales.rationale_set.RationaleSet` as a dict).
* A file that is not a readable sqlite database (a crash mid-copy, random bytes) is
  moved aside to ``<name>.corrupt-<timestamp>`` with a logged warning and a fresh cache
  is created: a broken cache costs a regeneration, never a crash.

Example:
    >>> import tempfile, pathlib
    >>> cache = RationaleCache(pathlib.Path(tempfile.mkdtemp()) / "r.sqlite")
    >>> fields = {"model": "m", "template": "chat"}
    >>> cache.put(fields, "Does aspirin help?", {"rationales": ["Look for stroke rates."]})
    >>> cache.get(fields, "Does aspirin help?")
    {'rationales': ['Look for stroke rates.']}
    >>> len(cache)
    1
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from meteora._io import ensure_parent
from meteora.errors import InvalidInputError, MeteoraError, UnsafeOverwriteError
from meteora.settings import meteora_home

__all__ = ["RationaleCache", "cache_key", "default_cache_path"]

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 30.0
_CHUNK = 500  # sqlite's default host-parameter limit is 999


def default_cache_path() -> Path:
    """``$METEORA_HOME/rationales.sqlite``."""
    return meteora_home() / "rationales.sqlite"


def _canonical(obj: Any) -> str:
    try:
        return json.dumps(
            obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"cache key fields must be JSON-serialisable (str, int, float, bool, None, lists, dicts): {exc}"
        ) from exc


def cache_key(fields: Mapping[str, Any], query: str) -> str:
    """sha256 hex digest of the canonical JSON of ``fields`` and ``query``.

    Example:
        >>> cache_key({"a": 1, "b": 2}, "q") == cache_key({"b": 2, "a": 1}, "q")
        True
    """
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    return hashlib.sha256(
        _canonical({"fields": dict(fields), "query": query}).encode("utf-8")
    ).hexdigest()


class RationaleCache:
    """A persistent ``(key fields, query) -> JSON`` store.

    Args:
        path: sqlite file; ``None`` uses :func:`default_cache_path`. The folder is
            created when missing.

    Thread-safe: each thread gets its own connection. Safe across processes: sqlite
    locking plus WAL lets readers proceed while a writer commits.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        if self.path.exists() and self.path.is_dir():
            raise InvalidInputError(
                f"rationale cache path {self.path} is a folder; pass a file path"
            )
        ensure_parent(self.path)
        _refuse_foreign_database(self.path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0  # bumped when the file is replaced, so threads reconnect
        self._open_checked()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            logger.debug("rationale cache %s: WAL mode not available (%s)", self.path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS rationales ("
            " key TEXT PRIMARY KEY, query TEXT NOT NULL, fields TEXT NOT NULL,"
            " value TEXT NOT NULL, created REAL NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(_SCHEMA_VERSION),),
        )
        conn.commit()
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row is None or row[0] != str(_SCHEMA_VERSION):
            conn.close()
            raise sqlite3.DatabaseError(
                f"unsupported rationale cache schema {row[0] if row else None!r}"
            )
        return conn

    def _quarantine(self, exc: BaseException) -> None:
        """Move an unreadable cache file (and its WAL/SHM) aside."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        logger.warning(
            "rationale cache %s is unreadable (%s); moved it to %s and starting a new cache "
            "(rationales will be regenerated)",
            self.path,
            exc,
            target,
        )
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, target)
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.replace(side, target.with_name(target.name + suffix))

    def _open_checked(self) -> sqlite3.Connection:
        with self._lock:
            try:
                conn = self._connect()
                conn.execute("SELECT count(*) FROM rationales").fetchone()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise _operational(exc, self.path) from exc
                self._quarantine(exc)
                self._generation += 1
                conn = self._connect()
            self._local.conn = conn
            self._local.generation = self._generation
            return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", -1) != self._generation:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            conn = self._connect_or_recover()
        return conn

    def _connect_or_recover(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise _operational(exc, self.path) from exc
            return self._open_checked()
        self._local.conn = conn
        self._local.generation = self._generation
        return conn

    @contextlib.contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """Run one operation; on corruption, quarantine the file and retry once."""
        try:
            yield self._conn()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise _operational(exc, self.path) from exc
            self._quarantine(exc)
            with self._lock:
                self._generation += 1
            raise _Retry() from exc

    def _run(self, op: Any) -> Any:
        for attempt in range(2):
            try:
                with self._guard() as conn:
                    return op(conn)
            except _Retry:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    # -- public API ----------------------------------------------------------------------
    def get(self, fields: Mapping[str, Any], query: str) -> Any | None:
        """The stored value for ``(fields, query)``, or ``None``."""
        key = cache_key(fields, query)

        def op(conn: sqlite3.Connection) -> Any | None:
            row = conn.execute("SELECT value FROM rationales WHERE key = ?", (key,)).fetchone()
            return None if row is None else _loads(row[0], self.path)

        return self._run(op)

    def get_many(self, fields: Mapping[str, Any], queries: Sequence[str]) -> list[Any | None]:
        """Values for many queries under the same key fields (``None`` for misses)."""
        keys = [cache_key(fields, q) for q in queries]

        def op(conn: sqlite3.Connection) -> list[Any | None]:
            found: dict[str, Any] = {}
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value in conn.execute(
                    f"SELECT key, value FROM rationales WHERE key IN ({marks})", chunk
                ):
                    found[key] = _loads(value, self.path)
            return [found.get(k) for k in keys]

        return self._run(op)

    def put(self, fields: Mapping[str, Any], query: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) for ``(fields, query)``, replacing any old one."""
        self.put_many(fields, [(query, value)])

    def put_many(self, fields: Mapping[str, Any], items: Iterable[tuple[str, Any]]) -> None:
        """Store several ``(query, value)`` pairs in one transaction."""
        fields_json = _canonical(dict(fields))
        rows = []
        now = time.time()
        for query, value in items:
            rows.append((cache_key(fields, query), query, fields_json, _canonical(value), now))
        if not rows:
            return

        def op(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction
                conn.executemany(
                    "INSERT OR REPLACE INTO rationales (key, query, fields, value, created) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )

        self._run(op)

    def __len__(self) -> int:
        return int(
            self._run(lambda conn: conn.execute("SELECT count(*) FROM rationales").fetchone()[0])
        )

    def __contains__(self, item: tuple[Mapping[str, Any], str]) -> bool:
        fields, query = item
        return self.get(fields, query) is not None

    def clear(self) -> None:
        """Delete every stored entry (the file stays)."""

        def op(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("DELETE FROM rationales")

        self._run(op)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None

    def __enter__(self) -> RationaleCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RationaleCache(path={str(self.path)!r})"


_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = {"rationales", "meta"}


def _refuse_foreign_database(path: Path) -> None:
    """Refuse an existing SQLite database that is not a rationale cache.

    Its tables are listed read-only; nothing is created, moved or changed. A file that is
    not SQLite at all is refused too, unless it is meteora's own default cache (then the
    corruption handling moves it aside and starts a new one).

    Raises:
        UnsafeOverwriteError: ``path`` is another program's SQLite database, or not SQLite.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as exc:
        raise MeteoraError(f"cannot read the rationale cache {path} ({exc})") from exc
    if head != _SQLITE_MAGIC:
        if not head or path.resolve() == default_cache_path().resolve():
            return  # empty, or meteora's own default cache damaged: moved aside and rebuilt
        raise UnsafeOverwriteError(
            f"{path} is not an SQLite database, so it is not a meteora rationale cache (a user "
            "file?); meteora will not move or overwrite it: pass another cache path (or "
            "cache=False), or delete the file if it is a damaged cache"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            schema = (
                conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
                if "meta" in tables
                else None
            )
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return  # unreadable: the corruption handling decides
    if not tables:
        return  # an empty database: nothing to lose
    foreign = sorted(tables - _OUR_TABLES)
    if foreign or "rationales" not in tables or schema is None:
        raise UnsafeOverwriteError(
            f"{path} is an SQLite database of another program (tables: "
            f"{', '.join(sorted(tables)[:5])}), not a meteora rationale cache; meteora will not "
            "add tables to it: pass another cache path (or cache=False)"
        )


def _is_corruption(exc: BaseException) -> bool:
    """A damaged file ("file is not a database", "malformed"), not a lock or I/O problem."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _operational(exc: BaseException, path: Path) -> MeteoraError:
    return MeteoraError(
        f"rationale cache {path} could not be used ({exc}); check that the folder is writable and "
        "not on a network file system, or pass cache=False / another cache path"
    )


class _Retry(Exception):
    """Internal: the file was quarantined, run the operation again."""


def _loads(value: str, path: Path) -> Any | None:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        logger.warning("rationale cache %s holds an unreadable entry; ignoring it", path)
        return None
