"""The passage-embedding cache: meteora's one cache (:class:`~meteora.cache.Cache`) of
float32 vectors, a bounded in-memory LRU optionally backed by an SQLite file.

Entries are keyed by an encoder identity (see :attr:`meteora.embeddings.encoder.Encoder.identity`)
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

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meteora.cache import Cache
from meteora.cache_table import SQLiteTable, TableLayout
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


def _from_row(row: tuple) -> np.ndarray | None:
    dim, blob = row
    if not isinstance(blob, bytes) or len(blob) != 4 * int(dim):
        return None
    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=True)
    vec.setflags(write=False)
    return vec


def _not_sqlite(path: Path) -> MeteoraError:
    return EmbeddingCacheError(
        f"{path} exists and is not a meteora passage-embedding cache (not an SQLite file); "
        "it was left untouched. Move or delete it, or pass another path= for the cache"
    )


def _foreign(path: Path, tables: list[str]) -> MeteoraError:
    return EmbeddingCacheError(
        f"{path} is an SQLite database that is not a meteora passage-embedding cache "
        f"(tables: {', '.join(tables)}); it was left untouched. "
        "Pass another path= for the cache, or move that file away"
    )


#: One row per (encoder identity, text key): the vector as raw little-endian float32.
LAYOUT = TableLayout(
    label="passage-embedding cache",
    table="embeddings",
    ddl=(
        "CREATE TABLE IF NOT EXISTS embeddings (encoder TEXT NOT NULL, key BLOB NOT NULL,"
        " dim INTEGER NOT NULL, vec BLOB NOT NULL, used REAL NOT NULL,"
        " PRIMARY KEY (encoder, key)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used)",
    ),
    meta={"format": _FORMAT, "schema_version": _SCHEMA_VERSION},
    key_columns=("encoder", "key"),
    value_columns=("dim", "vec"),
    insert="INSERT OR IGNORE INTO embeddings (encoder, key, dim, vec, used) VALUES (?, ?, ?, ?, ?)",
    to_row=lambda key, vec, now: (key[0], key[1], int(vec.shape[0]), vec.astype("<f4").tobytes(), now),
    from_row=_from_row,
    owns=lambda tables, meta: meta.get("format") == _FORMAT,
    refuse_non_sqlite=_not_sqlite,
    refuse_foreign=_foreign,
    unusable=lambda path, exc: _unusable(path, exc),
    used_column="used",
    drop_unreadable=True,
    logger=logger,
)


class PassageEmbeddingCache(Cache):
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
        table = SQLiteTable(_resolve_disk_path(path), LAYOUT) if path is not None else None
        super().__init__(max_entries, max_bytes=max_bytes, table=table, max_disk_entries=max_disk_entries)

    def get_many(self, encoder_id: str, keys: Sequence[bytes]) -> list[np.ndarray | None]:  # type: ignore[override]
        """The stored vector for each key (``None`` for a miss), in order.

        Returned arrays are read-only copies held by the cache; the counts of hits and
        misses in :meth:`stats` are updated.
        """
        return super().get_many([(encoder_id, bytes(k)) for k in keys])

    def put_many(self, encoder_id: str, keys: Sequence[bytes], embeddings: np.ndarray) -> None:  # type: ignore[override]
        """Store one row of ``embeddings`` (float32) per key, in memory and on disk."""
        arr = np.asarray(embeddings, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(keys):
            raise InvalidInputError(f"put_many needs one embedding row per key; got shape {arr.shape} for {len(keys)} keys")
        items = []
        for key, row in zip(keys, arr, strict=True):
            vec = np.array(row, dtype=np.float32, copy=True)
            vec.setflags(write=False)
            items.append(((encoder_id, bytes(key)), vec))
        super().put_many(items)

    def __enter__(self) -> PassageEmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"PassageEmbeddingCache(max_entries={self.max_entries}, entries={len(self)}{where})"


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
