"""The common retriever interface and the safe on-disk index format.

Every retriever (:class:`~meteora.retrievers.BM25Retriever`,
:class:`~meteora.retrievers.DenseRetriever`, :class:`~meteora.retrievers.HybridRetriever`)
implements :class:`Retriever`:

* ``index(passages) -> self`` builds the index from strings, dicts or :class:`Passage`;
* ``search(query, k)`` returns one :class:`~meteora.types.Ranking`, ``search([q1, q2], k)``
  a list of them (queries are batched internally);
* ``save(dir)`` / ``load(dir)`` persist the index; :func:`load_retriever` loads any kind.

Each saved version of an index holds ``manifest.json``::

    {"format": "meteora-index", "format_version": 1, "kind": "bm25",
     "counts": {...}, "parameters": {...},
     "files": {"passages.sqlite": {"sha256": "...", "bytes": 123}, ...}}

plus ``passages.sqlite`` (the passage store, :mod:`meteora.retrievers.passage_store`;
indexes written before it hold ``passages.jsonl``, still read) and kind-specific data
(``.npy`` arrays saved without pickle,
FAISS native files, bm25s's own arrays). Versions are published atomically behind a
pointer file (:mod:`meteora.retrievers.storage`): a reader always finds a complete index,
a killed save leaves the previous one in place, and a folder meteora did not write is
never replaced. Loading checks the format, version, kind, that every file stays inside
the folder, and every file's SHA-256, and raises
:class:`~meteora.errors.IndexFormatError` naming the file and what to do.

Example:
    >>> from meteora.retrievers import BM25Retriever
    >>> r = BM25Retriever(backend="numpy").index(["Aspirin reduces fever.", "Statins lower LDL."])
    >>> r.search("fever", k=1).ids
    ['0']
"""

from __future__ import annotations

import importlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, overload

import numpy as np

from meteora.errors import InvalidInputError
from meteora.retrievers.index_files import KINDS, REBUILD_HINT, read_manifest
from meteora.retrievers.passage_store import MemoryPassages, PassageStore
from meteora.retrievers.storage import load_index, publish_index, resolve_index
from meteora.types import Passage, PassageLike, Ranking, check_queries, check_query, to_passages

__all__ = ["Retriever", "load_retriever", "topk_indices", "check_k"]

logger = logging.getLogger(__name__)

_KINDS = KINDS  # kept for callers of meteora 0.1
_REBUILD_HINT = REBUILD_HINT


def check_k(k: Any) -> int:
    """Validate a number of hits: a positive integer.

    Example:
        >>> check_k(5)
        5
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first, ties by index.

    Deterministic: among equal scores the smaller index (earlier corpus position) wins,
    also at the cut-off. Works on a 1-D ``(n,)`` or 2-D ``(q, n)`` array and returns
    ``(k,)`` or ``(q, k)`` (``k`` is clipped to ``n``).

    Example:
        >>> topk_indices(np.array([0.1, 0.5, 0.5, 0.9]), 3).tolist()
        [3, 1, 2]
    """
    arr = np.asarray(scores)
    one = arr.ndim == 1
    if one:
        arr = arr[None, :]
    q, n = arr.shape
    k = min(int(k), n)
    if k <= 0:
        out = np.zeros((q, 0), dtype=np.int64)
        return out[0] if one else out
    neg = -arr
    if k >= n or n <= 2 * k:
        out = np.argsort(neg, axis=1, kind="stable")[:, :k]
        return out[0] if one else out
    part = np.argpartition(neg, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(arr, part, axis=1)
    kth = vals.min(axis=1)
    n_ge = (arr >= kth[:, None]).sum(axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    out = np.take_along_axis(part, order, axis=1)
    for r in np.flatnonzero(n_ge > k):  # a tie straddles the cut-off: resolve by index
        cand = np.flatnonzero(arr[r] >= kth[r])
        out[r] = cand[np.argsort(-arr[r, cand], kind="stable")[:k]]
    return out[0] if one else out


class Retriever(ABC):
    """Base class of every retriever: one interface for index, search and persistence.

    Subclasses implement :meth:`index`, :meth:`_search_batch`, :meth:`save` and
    :meth:`load`; this class provides input checking, single/batch dispatch,
    :attr:`passages`, :meth:`get_passage`, ``len()`` and ``repr()``.
    """

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self._store: PassageStore = MemoryPassages()

    # -- corpus ------------------------------------------------------------------------
    def _set_passages(self, passages: Iterable[PassageLike]) -> list[Passage]:
        """Normalise passages (duplicate ids and empty corpora are errors) and store them."""
        if passages is None:
            raise InvalidInputError("passages is None; pass a list of str, dict or Passage")
        ps = to_passages(passages)
        if not ps:
            raise InvalidInputError(
                f"cannot index an empty corpus; pass at least one passage to {type(self).__name__}.index()"
            )
        self._store = MemoryPassages(ps)
        return ps

    def _new_passages(self, passages: Iterable[PassageLike]) -> list[Passage]:
        """Normalise passages to append: items without an id are numbered on from ``len(self)``.

        Raises:
            InvalidInputError: no passages, or an id already in the index.
        """
        if passages is None or isinstance(passages, (str, bytes)):
            raise InvalidInputError("passages must be a list of str, dict or Passage")
        start = len(self._store)
        items: list[PassageLike] = []
        for i, item in enumerate(passages):
            if isinstance(item, str):
                item = {"text": item, "id": str(start + i)}
            elif isinstance(item, dict) and item.get("id", item.get("_id")) is None:
                item = {**item, "id": str(start + i)}
            items.append(item)
        new = to_passages(items)
        if not new:
            raise InvalidInputError("no passages to add; pass at least one")
        for p, row in zip(new, self._store.rows_of([p.id for p in new]), strict=True):
            if row is not None:
                raise InvalidInputError(
                    f"passage id {p.id!r} is already in the index; ids must be unique (give new passages new ids)"
                )
        return new

    def _extend_passages(self, new: list[Passage]) -> list[Passage]:
        """Append passages already checked by :meth:`_new_passages` (a loaded index's
        on-disk passages are read into memory first)."""
        if not isinstance(self._store, MemoryPassages):
            self._store = MemoryPassages(list(self._store))
        self._store.extend(new)
        return new

    @property
    def passages(self) -> list[Passage]:
        """The indexed passages, in corpus order (a copy; a loaded index reads them all
        from disk: prefer :meth:`get_passage` and :meth:`neighbours` on large ones)."""
        return list(self._store)

    @property
    def passage_store(self) -> PassageStore:
        """Where the passages live (:mod:`meteora.retrievers.passage_store`)."""
        return self._store

    def __len__(self) -> int:
        return len(self._store)

    def get_passage(self, id: str) -> Passage:
        """The indexed passage with this id.

        Raises:
            InvalidInputError: no passage has that id.
        """
        return self._store[self.position_of(id)]

    def position_of(self, id: str) -> int:
        """0-based corpus position of the passage with this id."""
        (row,) = self._store.rows_of([id])
        if row is None:
            raise InvalidInputError(f"no passage with id {id!r} in this index ({len(self)} passages)")
        return row

    def neighbours(self, passages: Sequence[Passage], window: int) -> list[Passage]:
        """The indexed chunks of these passages' documents within ``window`` positions of
        one of them (the passages themselves included): documents in order of first
        appearance, chunks by position. Looked up by ``(doc_id, position)`` in the
        passage store; nothing is copied or cached.

        Example:
            >>> from meteora.retrievers.bm25 import BM25Retriever
            >>> r = BM25Retriever(backend="numpy").index(
            ...     [{"id": f"d-{i}", "doc_id": "d", "position": i, "text": f"chunk {i}"} for i in range(5)])
            >>> [p.id for p in r.neighbours([r.get_passage("d-2")], window=1)]
            ['d-1', 'd-2', 'd-3']
        """
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise InvalidInputError(f"window must be a non-negative integer, got {window!r}")
        return self._store.neighbours(list(passages), int(window))

    def document_sizes(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """How many chunks each of these documents has in the index (0 for one it does not
        hold), counted in the passage store.

        Example:
            >>> from meteora.retrievers.bm25 import BM25Retriever
            >>> r = BM25Retriever(backend="numpy").index(
            ...     [{"id": f"d-{i}", "doc_id": "d", "position": i, "text": f"chunk {i}"} for i in range(3)])
            >>> r.document_sizes(["d", "x"])
            {'d': 3, 'x': 0}
        """
        self._check_indexed()
        return self._store.document_sizes(list(doc_ids))

    def _check_indexed(self) -> None:
        if not len(self._store):
            raise InvalidInputError(
                f"{type(self).__name__} has no index yet; call .index(passages) or .load(dir) first"
            )

    # -- search ------------------------------------------------------------------------
    @overload
    def search(self, query: str, k: int = 10) -> Ranking: ...

    @overload
    def search(self, query: list[str], k: int = 10) -> list[Ranking]: ...

    def search(self, query: str | Sequence[str], k: int = 10) -> Ranking | list[Ranking]:
        """Search one query (returns a :class:`Ranking`) or a list (returns a list).

        ``k`` larger than the corpus returns every matching passage. Rankings are in
        ranked order; equal scores are ordered by corpus position.

        Raises:
            InvalidInputError: empty query, wrong type, ``k < 1``, or no index.
        """
        k = check_k(k)
        self._check_indexed()
        if isinstance(query, str):
            q = check_query(query)
            return self._search_batch([q], k)[0]
        queries = check_queries(query)
        if not queries:
            return []
        return self._search_batch(queries, k)

    @abstractmethod
    def _search_batch(self, queries: list[str], k: int) -> list[Ranking]:
        """Search validated, non-empty queries on a non-empty index."""

    @abstractmethod
    def index(self, passages: Iterable[PassageLike]) -> Retriever:
        """Build the index from ``passages``; returns ``self``."""

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to the folder ``directory``; returns the path.

        The new index becomes visible at once and completely (see
        :mod:`meteora.retrievers.storage`): readers see the old or the new index, never a
        missing or partial one, even if this process is killed. Saving again to the same
        folder replaces the index; a folder holding anything else, or a file, is refused.

        Raises:
            UnsafeOverwriteError: ``directory`` is a file or a folder that is not a meteora index.
        """
        self._check_indexed()
        path = publish_index(directory, self._write_index)
        logger.debug("saved %s index (%d passages) to %s", self.kind, len(self), path)
        return path

    @abstractmethod
    def _write_index(self, directory: Path) -> None:
        """Write this index's files and manifest into the empty folder ``directory``."""

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> Retriever:
        """Load an index written by :meth:`save` (keyword arguments: see ``_read_index``)."""
        return load_index(directory, lambda version: cls._read_index(version, **kwargs))

    @classmethod
    @abstractmethod
    def _read_index(cls, directory: Path, **kwargs: Any) -> Retriever:
        """Load the index files of one version folder (checked against its manifest)."""

    def _repr_fields(self) -> str:
        return ""

    def __repr__(self) -> str:
        fields = self._repr_fields()
        sep = ", " if fields else ""
        return f"{type(self).__name__}({fields}{sep}passages={len(self)})"


def load_retriever(directory: str | os.PathLike[str], **kwargs: Any) -> Retriever:
    """Load any saved retriever, choosing the class from the manifest's ``kind``.

    Keyword arguments go to that class's ``load`` (e.g. ``encoder=`` for dense and
    hybrid indexes).

    Example:
        >>> import tempfile
        >>> from meteora.retrievers import BM25Retriever
        >>> d = tempfile.mkdtemp() + "/idx"
        >>> _ = BM25Retriever(backend="numpy").index(["a cold", "a fever"]).save(d)
        >>> type(load_retriever(d)).__name__
        'BM25Retriever'
    """
    manifest = read_manifest(resolve_index(directory), verify_files=False)  # load verifies files
    module_name, cls_name = KINDS[manifest["kind"]].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls.load(directory, **kwargs)


def importable(module: str) -> bool:
    """True when ``module`` is installed and imports cleanly (a broken install of an
    optional backend such as numba or faiss must not break retrieval)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True
