"""The common retriever interface and the safe on-disk index format.

Every retriever (:class:`~meteora.retrievers.BM25Retriever`,
:class:`~meteora.retrievers.DenseRetriever`, :class:`~meteora.retrievers.HybridRetriever`)
implements :class:`Retriever`:

* ``index(passages) -> self`` builds the index from strings, dicts or :class:`Passage`;
* ``search(query, k)`` returns one :class:`~meteora.types.Ranking`, ``search([q1, q2], k)``
  a list of them (queries are batched internally);
* ``save(dir)`` / ``load(dir)`` persist the index; :func:`load_retriever` loads any kind.

An index directory holds ``manifest.json``::

    {"format": "meteora-index", "format_version": 1, "kind": "bm25",
     "counts": {...}, "parameters": {...},
     "files": {"passages.jsonl": {"sha256": "...", "bytes": 123}, ...}}

plus ``passages.jsonl`` and kind-specific data (``.npy`` arrays saved without pickle,
FAISS native files, bm25s's own arrays). The directory is built in a temporary sibling
and renamed into place, so a failed save never leaves a half-written index. Loading
checks the format, version, kind and every file's SHA-256 and raises
:class:`~meteora.errors.IndexFormatError` naming the file and what to do.

Example:
    >>> from meteora.retrievers import BM25Retriever
    >>> r = BM25Retriever(backend="numpy").index(["Aspirin reduces fever.", "Statins lower LDL."])
    >>> r.search("fever", k=1).ids
    ['0']
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, overload

import numpy as np

from meteora._io import atomic_write_bytes, atomic_write_json, read_json
from meteora.errors import IndexFormatError, InvalidInputError
from meteora.types import Passage, PassageLike, Ranking, check_queries, check_query, to_passages

__all__ = [
    "Retriever",
    "load_retriever",
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "MANIFEST_NAME",
    "PASSAGES_NAME",
    "topk_indices",
    "check_k",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "meteora-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PASSAGES_NAME = "passages.jsonl"

#: kind written in the manifest -> "module:Class" that loads it
_KINDS: dict[str, str] = {
    "bm25": "meteora.retrievers.bm25:BM25Retriever",
    "dense": "meteora.retrievers.dense:DenseRetriever",
    "hybrid": "meteora.retrievers.hybrid:HybridRetriever",
}

_REBUILD_HINT = "rebuild it with retriever.index(passages) and save it again"


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_passages(path: Path, passages: Sequence[Passage]) -> None:
    """Write passages as JSON lines (atomically); non-JSON metadata is an error."""
    lines = []
    for p in passages:
        try:
            lines.append(json.dumps(p.to_dict(), ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"passage {p.id!r} cannot be saved: its metadata is not JSON-serialisable ({exc}); "
                "keep metadata to str/int/float/bool/list/dict values"
            ) from exc
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")


def read_passages(path: Path) -> list[Passage]:
    """Read ``passages.jsonl`` written by :func:`write_passages`."""
    out: list[Passage] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    out.append(
                        Passage(
                            text=d["text"],
                            id=d["id"],
                            doc_id=d.get("doc_id", ""),
                            position=d.get("position", 0),
                            metadata=d.get("metadata") or {},
                        )
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    raise IndexFormatError(
                        f"{path}: line {lineno} is not a valid passage ({exc}); the index is corrupt, "
                        f"{_REBUILD_HINT}"
                    ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"cannot read {path} ({exc}); {_REBUILD_HINT}") from exc
    return out


def load_npy(path: Path, *, dtype: Any = None, ndim: int | None = None) -> np.ndarray:
    """Load a ``.npy`` array without pickle; any problem is an :class:`IndexFormatError`."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFormatError(
            f"{path} is not a readable .npy array ({exc}); {_REBUILD_HINT}"
        ) from exc
    if ndim is not None and arr.ndim != ndim:
        raise IndexFormatError(
            f"{path} holds a {arr.ndim}-d array, expected {ndim}-d; {_REBUILD_HINT}"
        )
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise IndexFormatError(
            f"{path} holds {arr.dtype} data, expected {np.dtype(dtype)}; {_REBUILD_HINT}"
        )
    return arr


def write_manifest(
    directory: Path,
    kind: str,
    *,
    counts: dict[str, Any],
    parameters: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` listing the SHA-256 of every other file in ``directory``.

    Files in sub-folders that hold their own manifest (a hybrid's members) are covered
    by that manifest: only the sub-manifest itself is hashed here.
    """
    from meteora import __version__

    files: dict[str, dict[str, Any]] = {}
    nested = {p.parent for p in directory.rglob(MANIFEST_NAME) if p.parent != directory}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(directory)
        if rel.as_posix() == MANIFEST_NAME:
            continue
        if any(parent in nested for parent in path.parents) and path.name != MANIFEST_NAME:
            continue
        files[rel.as_posix()] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "kind": kind,
        "meteora_version": __version__,
        "counts": counts,
        "parameters": parameters,
    }
    if extra:
        manifest.update(extra)
    manifest["files"] = files
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(
    directory: str | os.PathLike[str], kind: str | None = None, *, verify_files: bool = True
) -> dict[str, Any]:
    """Read and verify ``manifest.json``: format, version, kind, files and checksums.

    With ``verify_files=False`` only the manifest itself is checked (no hashing).

    Raises:
        IndexFormatError: the directory is not a meteora index, was written by another
            format version, holds another kind, or a file is missing or altered.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise IndexFormatError(
            f"{directory} is not a directory; pass the folder written by retriever.save(dir)"
        )
    if not path.is_file():
        raise IndexFormatError(
            f"{path} is missing: {directory} is not a meteora index (or an incomplete one); "
            f"{_REBUILD_HINT}"
        )
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}); {_REBUILD_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise IndexFormatError(
            f"{path} does not describe a {INDEX_FORMAT!r} index (format={manifest.get('format') if isinstance(manifest, dict) else None!r}); "
            "pass a folder written by retriever.save(dir)"
        )
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format_version {version!r}, but this meteora reads version {INDEX_FORMAT_VERSION}; "
            f"install the meteora version that wrote it, or {_REBUILD_HINT}"
        )
    found = manifest.get("kind")
    if found not in _KINDS:
        raise IndexFormatError(
            f"{path} names an unknown index kind {found!r} (known: {sorted(_KINDS)}); {_REBUILD_HINT}"
        )
    if kind is not None and found != kind:
        raise IndexFormatError(
            f"{directory} holds a {found!r} index, not a {kind!r} one; load it with "
            "meteora.retrievers.load_retriever(dir) or the matching class"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise IndexFormatError(f"{path} has no 'files' table; {_REBUILD_HINT}")
    for name, info in files.items() if verify_files else ():
        fpath = directory / name
        if not isinstance(info, dict) or "sha256" not in info:
            raise IndexFormatError(f"{path}: entry for {name!r} has no sha256; {_REBUILD_HINT}")
        if not fpath.is_file():
            raise IndexFormatError(f"{fpath} is missing from the index; {_REBUILD_HINT}")
        size = fpath.stat().st_size
        if "bytes" in info and size != info["bytes"]:
            raise IndexFormatError(
                f"{fpath} has {size} bytes, the manifest says {info['bytes']} (truncated or altered); {_REBUILD_HINT}"
            )
        if _sha256(fpath) != info["sha256"]:
            raise IndexFormatError(
                f"{fpath} does not match its SHA-256 in the manifest (corrupt or altered); {_REBUILD_HINT}"
            )
    for key in ("counts", "parameters"):
        if not isinstance(manifest.get(key), dict):
            raise IndexFormatError(f"{path} has no {key!r} table; {_REBUILD_HINT}")
    return manifest


def manifest_value(manifest: dict[str, Any], section: str, key: str, directory: Path) -> Any:
    """Fetch ``manifest[section][key]`` or raise :class:`IndexFormatError`."""
    try:
        return manifest[section][key]
    except (KeyError, TypeError) as exc:
        raise IndexFormatError(
            f"{directory / MANIFEST_NAME} lacks {section}.{key}; {_REBUILD_HINT}"
        ) from exc


class Retriever(ABC):
    """Base class of every retriever: one interface for index, search and persistence.

    Subclasses implement :meth:`index`, :meth:`_search_batch`, :meth:`save` and
    :meth:`load`; this class provides input checking, single/batch dispatch,
    :attr:`passages`, :meth:`get_passage`, ``len()`` and ``repr()``.
    """

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self._passages: list[Passage] = []
        self._pos: dict[str, int] = {}

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
        self._passages = ps
        self._pos = {p.id: i for i, p in enumerate(ps)}
        return ps

    def _new_passages(self, passages: Iterable[PassageLike]) -> list[Passage]:
        """Normalise passages to append: items without an id are numbered on from ``len(self)``.

        Raises:
            InvalidInputError: no passages, or an id already in the index.
        """
        if passages is None or isinstance(passages, (str, bytes)):
            raise InvalidInputError("passages must be a list of str, dict or Passage")
        start = len(self._passages)
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
        for p in new:
            if p.id in self._pos:
                raise InvalidInputError(
                    f"passage id {p.id!r} is already in the index; ids must be unique (give new passages new ids)"
                )
        return new

    def _extend_passages(self, new: list[Passage]) -> list[Passage]:
        """Append passages already checked by :meth:`_new_passages`."""
        start = len(self._passages)
        self._passages.extend(new)
        for i, p in enumerate(new):
            self._pos[p.id] = start + i
        return new

    @property
    def passages(self) -> list[Passage]:
        """The indexed passages, in corpus order (a copy)."""
        return list(self._passages)

    def __len__(self) -> int:
        return len(self._passages)

    def get_passage(self, id: str) -> Passage:
        """The indexed passage with this id.

        Raises:
            InvalidInputError: no passage has that id.
        """
        try:
            return self._passages[self._pos[id]]
        except KeyError:
            raise InvalidInputError(
                f"no passage with id {id!r} in this index ({len(self)} passages)"
            ) from None

    def position_of(self, id: str) -> int:
        """0-based corpus position of the passage with this id."""
        try:
            return self._pos[id]
        except KeyError:
            raise InvalidInputError(
                f"no passage with id {id!r} in this index ({len(self)} passages)"
            ) from None

    def _check_indexed(self) -> None:
        if not self._passages:
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
    @abstractmethod
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` (atomically); returns the path."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> Retriever:
        """Load an index written by :meth:`save`."""

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
    manifest = read_manifest(directory, verify_files=False)  # cls.load verifies the files
    module_name, cls_name = _KINDS[manifest["kind"]].split(":")
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
