"""Persistent rationale cache (sqlite3, JSON values, never pickle).

Generating rationales is the slow part of METEORA (about a second per query for the
small offline model on a CPU), so results are stored by a key that says everything
that changes them: model, adapter, template (name and a hash of its fields),
generation parameters, number of rationales, filters and the query. Benchmark reruns
then read them back instead of regenerating.

* One sqlite file, default ``$METEORA_HOME/rationales.sqlite``, through meteora's one
  cache (:class:`~meteora.cache.Cache` over an :class:`~meteora.cache.SQLiteTable`): WAL
  mode with a busy timeout, so several processes can read while one writes.
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

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meteora._io import ensure_parent
from meteora.cache import Cache
from meteora.cache_table import SQLiteTable, TableLayout
from meteora.errors import InvalidInputError, MeteoraError, UnsafeOverwriteError
from meteora.settings import meteora_home

__all__ = ["RationaleCache", "cache_key", "default_cache_path"]

logger = logging.getLogger(__name__)

_SCHEMA_VERSION = 1


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


@dataclass(frozen=True)
class _Entry:
    """One stored rationale set: its query, key fields (canonical JSON) and value."""

    query: str
    fields: str
    value: Any


def _from_row(row: tuple) -> _Entry | None:
    query, fields, value = row
    try:
        return _Entry(query, fields, json.loads(value))
    except (TypeError, json.JSONDecodeError):
        return None


def _not_sqlite(path: Path) -> MeteoraError:
    return UnsafeOverwriteError(
        f"{path} is not an SQLite database, so it is not a meteora rationale cache (a user "
        "file?); meteora will not move or overwrite it: pass another cache path (or "
        "cache=False), or delete the file if it is a damaged cache"
    )


def _foreign(path: Path, tables: list[str]) -> MeteoraError:
    return UnsafeOverwriteError(
        f"{path} is an SQLite database of another program (tables: {', '.join(tables[:5])}), not a meteora "
        "rationale cache; meteora will not add tables to it: pass another cache path (or cache=False)"
    )


def _unusable(path: Path, exc: BaseException) -> MeteoraError:
    return MeteoraError(
        f"rationale cache {path} could not be used ({exc}); check that the folder is writable and "
        "not on a network file system, or pass cache=False / another cache path"
    )


#: The table the rationale generator has always written (same keys, columns and JSON).
LAYOUT = TableLayout(
    label="rationale cache",
    table="rationales",
    ddl=(
        "CREATE TABLE IF NOT EXISTS rationales ("
        " key TEXT PRIMARY KEY, query TEXT NOT NULL, fields TEXT NOT NULL,"
        " value TEXT NOT NULL, created REAL NOT NULL)",
    ),
    meta={"schema_version": str(_SCHEMA_VERSION)},
    key_columns=("key",),
    value_columns=("query", "fields", "value"),
    insert="INSERT OR REPLACE INTO rationales (key, query, fields, value, created) VALUES (?, ?, ?, ?, ?)",
    to_row=lambda key, e, now: (key, e.query, e.fields, _canonical(e.value), now),
    from_row=_from_row,
    owns=lambda tables, meta: tables <= {"rationales", "meta"} and "rationales" in tables and "schema_version" in meta,
    refuse_non_sqlite=_not_sqlite,
    refuse_foreign=_foreign,
    unusable=_unusable,
    # only meteora's own default file is taken for a damaged cache; at a chosen path a
    # non-SQLite file may be a user's and is refused untouched
    quarantine_non_sqlite=lambda path: path.resolve() == default_cache_path().resolve(),
    logger=logger,
)


class RationaleCache:
    """A persistent ``(key fields, query) -> JSON`` store.

    Args:
        path: sqlite file; ``None`` uses :func:`default_cache_path`. The folder is
            created when missing.

    Thread-safe: each thread gets its own connection. Safe across processes: sqlite
    locking plus WAL lets readers proceed while a writer commits.

    Raises:
        InvalidInputError: ``path`` is a folder.
        UnsafeOverwriteError: ``path`` is not SQLite, or another program's database.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        if self.path.exists() and self.path.is_dir():
            raise InvalidInputError(
                f"rationale cache path {self.path} is a folder; pass a file path"
            )
        ensure_parent(self.path)
        # file only: other processes write the same file, so memory would go stale
        self._cache = Cache(max_entries=0, table=SQLiteTable(self.path, LAYOUT))

    def get(self, fields: Mapping[str, Any], query: str) -> Any | None:
        """The stored value for ``(fields, query)``, or ``None``."""
        return self.get_many(fields, [query])[0]

    def get_many(self, fields: Mapping[str, Any], queries: Sequence[str]) -> list[Any | None]:
        """Values for many queries under the same key fields (``None`` for misses)."""
        entries = self._cache.get_many([cache_key(fields, q) for q in queries])
        return [None if e is None else e.value for e in entries]

    def put(self, fields: Mapping[str, Any], query: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) for ``(fields, query)``, replacing any old one."""
        self.put_many(fields, [(query, value)])

    def put_many(self, fields: Mapping[str, Any], items: Iterable[tuple[str, Any]]) -> None:
        """Store several ``(query, value)`` pairs in one transaction."""
        fields_json = _canonical(dict(fields))
        entries = []
        for query, value in items:
            entries.append((cache_key(fields, query), _Entry(query, fields_json, value)))
        self._cache.put_many(entries)

    def __len__(self) -> int:
        return self._cache.disk_count()

    def __contains__(self, item: tuple[Mapping[str, Any], str]) -> bool:
        fields, query = item
        return self.get(fields, query) is not None

    def clear(self) -> None:
        """Delete every stored entry (the file stays)."""
        self._cache.clear()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._cache.close()

    def __enter__(self) -> RationaleCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RationaleCache(path={str(self.path)!r})"
