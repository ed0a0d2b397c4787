"""The passage-embedding cache: a bounded in-memory LRU, optionally backed by an SQLite file.

Entries are keyed by an encoder identity (see :attr:`meteora.embeddings.Encoder.identity`)
and :func:`text_key`, the sha256 of the text; vectors are float32 (raw blobs on disk,
never pickle). A damaged file is moved aside and rebuilt; a foreign one is refused with
:class:`EmbeddingCacheError`.

Example:
    >>> import numpy as np
    >>> cache = PassageEmbeddingCache(max_entries=10)
    >>> cache.put_many("enc", [text_key("fever")], np.ones((1, 3), dtype=np.float32))
    >>> cache.get_many("enc", [text_key("fever"), text_key("cough")])[1] is None
    True
    >>> PassageEmbeddingCache(10, path="~/.cache/meteora/emb").stats()["path"]  # doctest: +SKIP
    '/home/me/.cache/meteora/emb/passage_embeddings.sqlite'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, MeteoraError

__all__ = [
    "PassageEmbeddingCache",
    "EmbeddingCacheError",
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_DISK_ENTRIES",
    "DISK_FILE_NAME",
    "text_key",
]

logger = logging.getLogger(__name__)

#: Entries of the in-memory cache every :class:`Encoder` gets by default (``cache=True``).
#: 10,000 x 384 float32 = 15.4 MB of vectors for the default MiniLM (17.9 MB measured with
#: Python's per-entry overhead).
DEFAULT_CACHE_ENTRIES = 10_000
#: Rows kept in an on-disk cache by default (about 330 MB for 384-d vectors).
DEFAULT_DISK_ENTRIES = 200_000
#: File name used when ``path`` names a folder.
DISK_FILE_NAME = "passage_embeddings.sqlite"

_FORMAT = "meteora-passage-embedding-cache"
_SCHEMA_VERSION = "1"
_SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0
_CHUNK = 400  # rows per IN (...) query; sqlite's host-parameter limit is 999 on old builds
_ENTRY_OVERHEAD = 200  # approximate Python bytes per memory entry beyond the vector itself


class EmbeddingCacheError(MeteoraError, OSError):
    """A passage-embedding cache file or folder cannot be used (the message says why and what to do)."""


def text_key(text: str) -> bytes:
    """The 32-byte sha256 digest of ``text`` (UTF-8) used as the cache key of a text.

    Example:
        >>> len(text_key("fever"))
        32
        >>> text_key("fever") == text_key("fever") != text_key("Fever")
        True
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class PassageEmbeddingCache:
    """A bounded, thread-safe ``(encoder identity, text) -> embedding`` store.

    Memory is an LRU bounded by ``max_entries`` and/or ``max_bytes`` (vector bytes).
    With ``path`` the cache is also kept in an SQLite file (float32 blobs, never
    pickle; WAL mode, so several processes can share it), bounded by
    ``max_disk_entries`` (least recently used rows are deleted first); lookups try
    memory, then disk, and promote disk hits into memory.

    A file at ``path`` that was not written by this class (not SQLite, or an SQLite
    database with other tables) is refused with :class:`EmbeddingCacheError`; a damaged
    cache file (unreadable SQLite pages, a truncated copy) or one of another schema
    version is moved aside to ``<name>.corrupt-<time>-<pid>`` with a warning and a fresh
    one is started: a broken cache costs re-encoding, never a crash.

    Args:
        max_entries: most vectors held in memory (``None``: no entry bound; ``0``:
            nothing kept in memory, e.g. a disk-only cache).
        max_bytes: most vector bytes held in memory (``None``: no byte bound).
        path: SQLite file (a name ending in ``.sqlite``/``.sqlite3``/``.db``) or a
            folder (the file is ``<folder>/passage_embeddings.sqlite``); ``None``:
            memory only.
        max_disk_entries: most rows kept on disk (``None``: unbounded).

    Example:
        >>> import numpy as np
        >>> cache = PassageEmbeddingCache(max_entries=2)
        >>> keys = [text_key(t) for t in ("a", "b", "c")]
        >>> cache.put_many("enc", keys, np.eye(3, dtype=np.float32))
        >>> [v is None for v in cache.get_many("enc", keys)]  # "a" was evicted
        [True, False, False]
        >>> cache.stats()["hits"], cache.stats()["misses"], len(cache)
        (2, 1, 2)
    """

    def __init__(
        self,
        max_entries: int | None = DEFAULT_CACHE_ENTRIES,
        *,
        max_bytes: int | None = None,
        path: str | os.PathLike[str] | None = None,
        max_disk_entries: int | None = DEFAULT_DISK_ENTRIES,
    ) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes), ("max_disk_entries", max_disk_entries)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"{name} must be a non-negative integer or None, got {value!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_disk_entries = max_disk_entries
        self._lock = threading.RLock()
        self._mem: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self._mem_bytes = 0
        self._stats = {"hits": 0, "misses": 0, "memory_hits": 0, "disk_hits": 0, "evictions": 0, "disk_evictions": 0}
        self._conn: sqlite3.Connection | None = None
        self._disk_count = 0
        self.path: Path | None = None
        if path is not None:
            self.path = _resolve_disk_path(path)
            with self._lock:
                self._open_disk()

    # -- public API --------------------------------------------------------------------
    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> list[np.ndarray | None]:
        """The stored vector for each key (``None`` for a miss), in order.

        Returned arrays are read-only views of the cache's copies; the counts of hits
        and misses in :meth:`stats` are updated.
        """
        out: list[np.ndarray | None] = [None] * len(keys)
        with self._lock:
            missing: dict[bytes, list[int]] = {}
            for i, key in enumerate(keys):
                vec = self._mem.get((encoder_id, key))
                if vec is not None:
                    self._mem.move_to_end((encoder_id, key))
                    out[i] = vec
                    self._stats["memory_hits"] += 1
                else:
                    missing.setdefault(key, []).append(i)
            if missing and self._conn is not None:
                found = self._disk_get(encoder_id, list(missing))
                for key, vec in found.items():
                    for i in missing.pop(key):
                        out[i] = vec
                        self._stats["disk_hits"] += 1
                    self._mem_put((encoder_id, key), vec)
            n_miss = sum(len(v) for v in missing.values())
            self._stats["misses"] += n_miss
            self._stats["hits"] += len(keys) - n_miss
        return out

    def put_many(self, encoder_id: str, keys: Sequence[bytes], embeddings: np.ndarray) -> None:
        """Store one row of ``embeddings`` (float32) per key, in memory and on disk."""
        arr = np.asarray(embeddings, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(keys):
            raise InvalidInputError(f"put_many needs one embedding row per key; got shape {arr.shape} for {len(keys)} keys")
        rows = []
        for i, key in enumerate(keys):
            vec = np.array(arr[i], dtype=np.float32, copy=True)
            vec.setflags(write=False)
            rows.append((key, vec))
        with self._lock:
            for key, vec in rows:
                self._mem_put((encoder_id, key), vec)
            if self._conn is not None and rows:
                self._disk_put(encoder_id, rows)

    def stats(self) -> dict[str, Any]:
        """Counters since creation (or :meth:`reset_stats`) and current sizes.

        Keys: ``hits`` (= ``memory_hits`` + ``disk_hits``), ``misses``, ``evictions``
        (from memory), ``disk_evictions``, ``entries`` and ``bytes`` (vectors in
        memory), ``disk_entries`` (approximate when other processes write), ``path``.
        """
        with self._lock:
            return {
                **self._stats,
                "entries": len(self._mem),
                "bytes": self._mem_bytes,
                "disk_entries": self._disk_count if self._conn is not None else None,
                "path": str(self.path) if self.path is not None else None,
            }

    def reset_stats(self) -> None:
        """Zero the hit/miss/eviction counters (the stored vectors stay)."""
        with self._lock:
            for k in self._stats:
                self._stats[k] = 0

    def clear(self, *, disk: bool = True) -> None:
        """Drop every entry from memory and, with ``disk=True``, from the file."""
        with self._lock:
            self._mem.clear()
            self._mem_bytes = 0
            if disk and self._conn is not None:
                self._disk_op(lambda c: c.execute("DELETE FROM embeddings"), write=True)
                self._disk_count = 0

    def close(self) -> None:
        """Close the disk connection (memory stays usable; the disk part is off)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def __len__(self) -> int:
        """Entries held in memory (see :meth:`stats` for the disk)."""
        with self._lock:
            return len(self._mem)

    def __bool__(self) -> bool:  # an empty cache is still a cache (``if cache:`` must not skip it)
        return True

    def __enter__(self) -> PassageEmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"PassageEmbeddingCache(max_entries={self.max_entries}, entries={len(self)}{where})"

    # -- memory ------------------------------------------------------------------------
    def _mem_put(self, key: tuple[str, bytes], vec: np.ndarray) -> None:
        if self.max_entries == 0 or (self.max_bytes is not None and vec.nbytes > self.max_bytes):
            return
        old = self._mem.pop(key, None)
        if old is not None:
            self._mem_bytes -= old.nbytes
        self._mem[key] = vec
        self._mem_bytes += vec.nbytes
        while self._mem and (
            (self.max_entries is not None and len(self._mem) > self.max_entries)
            or (self.max_bytes is not None and self._mem_bytes > self.max_bytes)
        ):
            _, dropped = self._mem.popitem(last=False)
            self._mem_bytes -= dropped.nbytes
            self._stats["evictions"] += 1

    # -- disk --------------------------------------------------------------------------
    def _open_disk(self) -> None:
        assert self.path is not None
        path = self.path
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_HEADER))
            if head != _SQLITE_HEADER:
                raise EmbeddingCacheError(
                    f"{path} exists and is not a meteora passage-embedding cache (not an SQLite file); "
                    "it was left untouched. Move or delete it, or pass another path= for the cache"
                )
        try:
            self._conn = self._connect_checked()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_corrupt_message(exc):
                raise _unusable(path, exc) from exc
            self._quarantine(exc)
            try:
                self._conn = self._connect_checked()
            except sqlite3.Error as exc2:
                raise _unusable(path, exc2) from exc2

    def _connect_checked(self) -> sqlite3.Connection:
        assert self.path is not None
        conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables:
                meta: dict[str, str] = {}
                if "meta" in tables:
                    with contextlib.suppress(sqlite3.OperationalError):
                        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
                if meta.get("format") != _FORMAT:
                    conn.close()
                    raise EmbeddingCacheError(
                        f"{self.path} is an SQLite database that is not a meteora passage-embedding cache "
                        f"(tables: {', '.join(sorted(tables))}); it was left untouched. "
                        "Pass another path= for the cache, or move that file away"
                    )
                if meta.get("schema_version") != _SCHEMA_VERSION:
                    raise sqlite3.DatabaseError(
                        f"passage-embedding cache schema {meta.get('schema_version')!r}, expected {_SCHEMA_VERSION}"
                    )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (encoder TEXT NOT NULL, key BLOB NOT NULL,"
                    " dim INTEGER NOT NULL, vec BLOB NOT NULL, used REAL NOT NULL,"
                    " PRIMARY KEY (encoder, key)) WITHOUT ROWID"
                )
                conn.execute("CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)")
                conn.executemany(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                    [("format", _FORMAT), ("schema_version", _SCHEMA_VERSION)],
                )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            # reads every page of the table: a damaged file shows up here, not mid-query
            self._disk_count = int(conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
            return conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise

    def _quarantine(self, exc: BaseException) -> None:
        assert self.path is not None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        logger.warning(
            "passage-embedding cache %s is unreadable (%s); moved it to %s and starting a new one "
            "(passages will be encoded again)",
            self.path,
            exc,
            target,
        )
        try:
            os.replace(self.path, target)
        except FileNotFoundError:
            pass
        except OSError as move_exc:
            raise _unusable(self.path, move_exc) from move_exc
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(OSError):
                os.replace(side, target.with_name(target.name + suffix))

    def _disk_op(self, op: Any, *, write: bool = False) -> Any:
        """Run ``op(conn)`` (in a transaction when ``write``); on a damaged file,
        quarantine it, start a new one and return ``None``."""
        assert self._conn is not None
        try:
            if not write:
                return op(self._conn)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = op(self._conn)
                self._conn.execute("COMMIT")
                return result
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_corrupt_message(exc):
                raise _unusable(self.path, exc) from exc
            self._quarantine(exc)
            try:
                self._conn = self._connect_checked()
            except sqlite3.Error as exc2:
                raise _unusable(self.path, exc2) from exc2
            return None

    def _disk_get(self, encoder_id: str, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        def op(conn: sqlite3.Connection) -> tuple[dict[bytes, np.ndarray], list[bytes]]:
            found: dict[bytes, np.ndarray] = {}
            bad: list[bytes] = []
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, dim, blob in conn.execute(
                    f"SELECT key, dim, vec FROM embeddings WHERE encoder = ? AND key IN ({marks})",
                    [encoder_id, *chunk],
                ):
                    if not isinstance(blob, bytes) or len(blob) != 4 * int(dim):
                        bad.append(key)
                        continue
                    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=True)
                    vec.setflags(write=False)
                    found[bytes(key)] = vec
            if bad:
                logger.warning("passage-embedding cache %s: %d malformed rows dropped", self.path, len(bad))
            return found, bad

        res = self._disk_op(op)
        if res is None:
            return {}
        found, bad = res
        now = time.time()
        touched = [(now, encoder_id, k) for k in found]
        if touched or bad:

            def write(conn: sqlite3.Connection) -> None:
                conn.executemany("UPDATE embeddings SET used = ? WHERE encoder = ? AND key = ?", touched)
                conn.executemany("DELETE FROM embeddings WHERE encoder = ? AND key = ?", [(encoder_id, k) for k in bad])

            self._disk_op(write, write=True)
        return found

    def _disk_put(self, encoder_id: str, rows: list[tuple[bytes, np.ndarray]]) -> None:
        now = time.time()
        params = [(encoder_id, key, int(vec.shape[0]), vec.astype("<f4").tobytes(), now) for key, vec in rows]

        def op(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO embeddings (encoder, key, dim, vec, used) VALUES (?, ?, ?, ?, ?)", params
            )
            added = conn.total_changes - before
            conn.executemany(
                "UPDATE embeddings SET used = ? WHERE encoder = ? AND key = ?",
                [(now, e, k) for e, k, *_ in params],
            )
            return added

        added = self._disk_op(op, write=True)
        if added:
            self._disk_count += int(added)
        if self.max_disk_entries is not None and self._disk_count > self.max_disk_entries:
            self._disk_evict()

    def _disk_evict(self) -> None:
        limit = self.max_disk_entries
        assert limit is not None

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            count = int(conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
            extra = count - limit
            if extra <= 0:
                return count, 0
            conn.execute(
                "DELETE FROM embeddings WHERE (encoder, key) IN "
                "(SELECT encoder, key FROM embeddings ORDER BY used, key LIMIT ?)",
                (extra,),
            )
            return count - extra, extra

        res = self._disk_op(op, write=True)
        if res is not None:
            self._disk_count, dropped = res
            self._stats["disk_evictions"] += dropped


def _is_corrupt_message(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return "malformed" in msg or "not a database" in msg or "corrupt" in msg


def _unusable(path: Path | None, exc: BaseException) -> EmbeddingCacheError:
    return EmbeddingCacheError(
        f"passage-embedding cache {path} cannot be used ({exc}). Check that its folder exists, is writable and is "
        "on a local file system, or pass another path= (or cache=True for a memory-only cache)"
    )


def _resolve_disk_path(path: str | os.PathLike[str]) -> Path:
    """The SQLite file for ``path`` (a file name or a folder); creates the folder."""
    p = Path(path).expanduser()
    if not str(path).strip():
        raise EmbeddingCacheError("passage-embedding cache path is empty; pass a folder or a .sqlite file path")
    is_file_name = p.suffix.lower() in {".sqlite", ".sqlite3", ".db"} and not p.is_dir()
    folder = p.parent if is_file_name else p
    file = p if is_file_name else p / DISK_FILE_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddingCacheError(
            f"cannot create the folder {folder} for the passage-embedding cache ({exc.strerror or exc}); "
            "pass a path= in a writable folder"
        ) from exc
    if not folder.is_dir():
        raise EmbeddingCacheError(f"{folder} is not a folder; pass a path= in a writable folder for the passage-embedding cache")
    if file.is_dir():
        raise EmbeddingCacheError(f"{file} is a folder; pass a .sqlite file path or a folder that does not contain one")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EmbeddingCacheError(
            f"the folder {folder} of the passage-embedding cache is not writable; pass a path= in a writable folder"
        )
    if file.exists() and not os.access(file, os.R_OK | os.W_OK):
        raise EmbeddingCacheError(
            f"the passage-embedding cache {file} is not readable and writable by this user; fix its permissions "
            "or pass another path="
        )
    return file
