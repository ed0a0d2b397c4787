"""One cache for everything meteora remembers: keyed, bounded, optionally on disk.

:class:`Cache` is a thread-safe key → value store: a least-recently-used map in memory,
bounded by entries and/or bytes, optionally backed by a
:class:`~meteora.cache_table.SQLiteTable` (one table of an SQLite file that threads and
processes share, bounded too when asked). Lookups try memory, then the file, and bring
file hits into memory; writes go to both. Rationales (:mod:`meteora.rationales.cache`),
passage embeddings (:mod:`meteora.embeddings.cache`) and the scorers' logits
(:mod:`meteora.scorer`, :mod:`meteora.defences`) are all :class:`Cache` objects; only
their :class:`~meteora.cache_table.TableLayout` (how a key and a value become a row) differs.

Example:
    >>> cache = Cache(max_entries=2)
    >>> cache.put_many([("a", 1), ("b", 2), ("c", 3)])
    >>> cache.get_many(["a", "c"]), len(cache)
    ([None, 3], 2)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from meteora.cache_table import SQLiteTable
from meteora.errors import InvalidInputError

__all__ = ["Cache"]


class Cache:
    """A bounded, thread-safe key → value store in memory, optionally over an
    :class:`SQLiteTable` (see the module doc).

    Args:
        max_entries: most values held in memory (``None``: no entry bound; ``0``: none,
            e.g. a file-only cache).
        max_bytes: most bytes held in memory, as measured by ``sizeof`` (``None``: no
            byte bound).
        table: the file part, or ``None`` (memory only).
        max_disk_entries: most rows kept in the file (``None``: unbounded; needs a layout
            with a ``used_column``).
        sizeof: a value's size in bytes (default: ``value.nbytes`` when it has one, else 0).

    Example:
        >>> c = Cache(max_entries=10)
        >>> c.put_many([(("enc", b"k"), 1.5)])
        >>> c.get_many([("enc", b"k"), ("enc", b"x")]), c.stats()["hits"]
        ([1.5, None], 1)
    """

    def __init__(
        self,
        max_entries: int | None = None,
        *,
        max_bytes: int | None = None,
        table: SQLiteTable | None = None,
        max_disk_entries: int | None = None,
        sizeof: Callable[[Any], int] | None = None,
    ) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes), ("max_disk_entries", max_disk_entries)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InvalidInputError(f"{name} must be a non-negative integer or None, got {value!r}")
        if max_disk_entries is not None and table is not None and table.layout.used_column is None:
            raise InvalidInputError(f"the {table.layout.label} keeps no use times, so its file cannot be bounded")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_disk_entries = max_disk_entries
        self.table = table
        self._sizeof = sizeof or (lambda v: int(getattr(v, "nbytes", 0)))
        self._lock = threading.RLock()
        self._mem: OrderedDict[Hashable, Any] = OrderedDict()
        self._mem_bytes = 0
        self._disk_count = table.count() if table is not None else 0
        self._stats = {"hits": 0, "misses": 0, "memory_hits": 0, "disk_hits": 0, "evictions": 0, "disk_evictions": 0}

    @property
    def path(self) -> Path | None:
        """The file, or ``None`` for a memory-only cache."""
        return self.table.path if self.table is not None else None

    def get_many(self, keys: Sequence[Hashable]) -> list[Any]:
        """The value of each key (``None`` for a miss), in order; counts hits and misses."""
        out: list[Any] = [None] * len(keys)
        with self._lock:
            missing: dict[Hashable, list[int]] = {}
            for i, key in enumerate(keys):
                if key in self._mem:
                    self._mem.move_to_end(key)
                    out[i] = self._mem[key]
                    self._stats["memory_hits"] += 1
                else:
                    missing.setdefault(key, []).append(i)
            if missing and self.table is not None:
                for key, value in self.table.get_many(list(missing)).items():
                    for i in missing.pop(key):
                        out[i] = value
                        self._stats["disk_hits"] += 1
                    self._remember(key, value)
            n_miss = sum(len(v) for v in missing.values())
            self._stats["misses"] += n_miss
            self._stats["hits"] += len(keys) - n_miss
        return out

    def put_many(self, items: Sequence[tuple[Hashable, Any]]) -> None:
        """Store ``(key, value)`` pairs in memory and in the file."""
        items = list(items)
        with self._lock:
            for key, value in items:
                self._remember(key, value)
            if self.table is not None and items:
                self._disk_count += self.table.put_many(items)
                if self.max_disk_entries is not None and self._disk_count > self.max_disk_entries:
                    self._stats["disk_evictions"] += self.table.evict(self.max_disk_entries)
                    self._disk_count = self.table.count()

    def _remember(self, key: Hashable, value: Any) -> None:
        size = self._sizeof(value)
        if self.max_entries == 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        if key in self._mem:
            self._mem_bytes -= self._sizeof(self._mem.pop(key))
        self._mem[key] = value
        self._mem_bytes += size
        while self._mem and (
            (self.max_entries is not None and len(self._mem) > self.max_entries)
            or (self.max_bytes is not None and self._mem_bytes > self.max_bytes)
        ):
            _, dropped = self._mem.popitem(last=False)
            self._mem_bytes -= self._sizeof(dropped)
            self._stats["evictions"] += 1

    def stats(self) -> dict[str, Any]:
        """Counters since creation (or :meth:`reset_stats`) and sizes: ``hits`` (=
        ``memory_hits`` + ``disk_hits``), ``misses``, ``evictions``, ``disk_evictions``,
        ``entries`` and ``bytes`` in memory, ``disk_entries`` (approximate while other
        processes write; ``None`` without a file) and ``path``."""
        with self._lock:
            return {
                **self._stats,
                "entries": len(self._mem),
                "bytes": self._mem_bytes,
                "disk_entries": self._disk_count if self.table is not None else None,
                "path": str(self.path) if self.path is not None else None,
            }

    def reset_stats(self) -> None:
        """Zero the counters (the stored values stay)."""
        with self._lock:
            for k in self._stats:
                self._stats[k] = 0

    def clear(self, *, disk: bool = True) -> None:
        """Forget every entry in memory and, with ``disk=True``, in the file."""
        with self._lock:
            self._mem.clear()
            self._mem_bytes = 0
            if disk and self.table is not None:
                self.table.clear()
                self._disk_count = 0

    def disk_count(self) -> int:
        """Rows in the file right now (every process's); 0 without a file."""
        return self.table.count() if self.table is not None else 0

    def close(self) -> None:
        """Close the file connection of this thread (memory stays usable)."""
        if self.table is not None:
            self.table.close()

    def __len__(self) -> int:
        """Entries held in memory."""
        with self._lock:
            return len(self._mem)

    def __bool__(self) -> bool:  # an empty cache is still a cache (``if cache:`` must not skip it)
        return True
