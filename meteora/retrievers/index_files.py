"""The files inside one saved index version: its checked manifest, passages and arrays.

Every version folder of a saved index holds a ``manifest.json`` (written by
:func:`write_manifest`) that names the index format, its version and kind, and lists every
other file with its size and SHA-256. :func:`read_manifest` checks all of that before a
loader touches a file: each entry must be a plain relative path that stays inside the
folder (no ``..``, no absolute paths, no symbolic links leading out), the files a loader
needs must be listed, and every listed file is hashed. The passages are stored as JSON
lines (:func:`write_passages`, :func:`read_passages`) and arrays as ``.npy`` files read
without pickle (:func:`load_npy`).

How versions are published, found and cleaned up lives in
:mod:`meteora.retrievers.storage`.

Example:
    >>> import tempfile, pathlib
    >>> from meteora.types import Passage
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_passages(d / PASSAGES_NAME, [Passage("hello", id="p0")])
    >>> _ = write_manifest(d, "bm25", counts={"passages": 1}, parameters={})
    >>> sorted(read_manifest(d, "bm25", required=[PASSAGES_NAME])["files"])
    ['passages.jsonl']
    >>> [p.id for p in read_passages(d / PASSAGES_NAME)]
    ['p0']
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import atomic_write_bytes, atomic_write_json, read_json
from meteora.errors import IndexFormatError, InvalidInputError
from meteora.types import Passage

__all__ = [
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "MANIFEST_NAME",
    "PASSAGES_NAME",
    "KINDS",
    "REBUILD_HINT",
    "is_plain_relative",
    "read_manifest",
    "write_manifest",
    "manifest_value",
    "manifest_int",
    "read_passages",
    "write_passages",
    "load_npy",
]

INDEX_FORMAT = "meteora-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PASSAGES_NAME = "passages.jsonl"

#: kind written in the manifest -> "module:Class" that loads it
KINDS: dict[str, str] = {
    "bm25": "meteora.retrievers.bm25:BM25Retriever",
    "dense": "meteora.retrievers.dense:DenseRetriever",
    "hybrid": "meteora.retrievers.hybrid:HybridRetriever",
}

REBUILD_HINT = "rebuild it with retriever.index(passages) and save it again"


# -- manifests ----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def is_plain_relative(name: Any) -> bool:
    """Whether ``name`` is a plain relative POSIX path: no ``..``, ``.`` or empty parts, not
    absolute, no backslash or NUL (the only file names a manifest may list).

    Example:
        >>> is_plain_relative("bm25s/vocab.json"), is_plain_relative("./.."), is_plain_relative("/etc")
        (True, False, False)
    """
    return (
        isinstance(name, str)
        and bool(name)
        and "\\" not in name
        and "\x00" not in name
        and not name.startswith("/")
        and not any(part in ("", ".", "..") for part in name.split("/"))
    )


def _confined(directory: Path, name: Any, manifest_path: Path) -> Path:
    """``directory / name`` if ``name`` is a plain relative path that stays inside."""
    if not is_plain_relative(name):
        raise IndexFormatError(
            f"{manifest_path}: file entry {name!r} is not a plain relative path inside the index "
            f"folder; the manifest is corrupt or was tampered with: {REBUILD_HINT}"
        )
    path = directory / name
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        raise IndexFormatError(
            f"{manifest_path}: file entry {name!r} leads outside the index folder (a symbolic "
            f"link?); refusing to read it: {REBUILD_HINT}"
        ) from None
    return path


def read_manifest(
    directory: str | os.PathLike[str],
    kind: str | None = None,
    *,
    verify_files: bool = True,
    required: Sequence[str] = (),
) -> dict[str, Any]:
    """Read and verify the ``manifest.json`` of one index version folder.

    Checks the format, version and kind; that every file entry is a plain relative path
    inside ``directory``; that the ``required`` files are listed; and (with
    ``verify_files``) that every listed file exists with its recorded size and SHA-256.

    Raises:
        IndexFormatError: not a meteora index, another format version or kind, a file
            missing, altered, or outside the folder.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise IndexFormatError(
            f"{directory} is not a folder; pass the folder written by retriever.save(dir)"
        )
    if not path.is_file():
        raise IndexFormatError(
            f"{path} is missing: {directory} is not a meteora index (or an incomplete one); "
            f"{REBUILD_HINT}"
        )
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}); {REBUILD_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        found_format = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexFormatError(
            f"{path} does not describe a {INDEX_FORMAT!r} index (format={found_format!r}); "
            "pass a folder written by retriever.save(dir)"
        )
    version = manifest.get("format_version")
    if version != INDEX_FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format_version {version!r}, but this meteora reads version {INDEX_FORMAT_VERSION}; "
            f"install the meteora version that wrote it, or {REBUILD_HINT}"
        )
    found = manifest.get("kind")
    if not isinstance(found, str) or found not in KINDS:
        raise IndexFormatError(
            f"{path} names an unknown index kind {found!r} (known: {sorted(KINDS)}); {REBUILD_HINT}"
        )
    if kind is not None and found != kind:
        raise IndexFormatError(
            f"{directory} holds a {found!r} index, not a {kind!r} one; load it with "
            "meteora.retrievers.load_retriever(dir) or the matching class"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IndexFormatError(
            f"{path} has no 'files' table listing the index files and their checksums; "
            f"{REBUILD_HINT}"
        )
    checked = {name: _confined(directory, name, path) for name in files}
    for name in required:
        if name not in files:
            raise IndexFormatError(
                f"{path} does not list {name!r}, which a {found} index needs; {REBUILD_HINT}"
            )
    for key in ("counts", "parameters"):
        if not isinstance(manifest.get(key), dict):
            raise IndexFormatError(f"{path} has no {key!r} table; {REBUILD_HINT}")
    for name, info in files.items() if verify_files else ():
        fpath = checked[name]
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise IndexFormatError(f"{path}: entry for {name!r} has no sha256; {REBUILD_HINT}")
        if not fpath.is_file():
            raise IndexFormatError(f"{fpath} is missing from the index; {REBUILD_HINT}")
        size = fpath.stat().st_size
        if "bytes" in info and size != info["bytes"]:
            raise IndexFormatError(
                f"{fpath} has {size} bytes, the manifest says {info['bytes']!r} (truncated or altered); {REBUILD_HINT}"
            )
        if _sha256(fpath) != info["sha256"]:
            raise IndexFormatError(
                f"{fpath} does not match its SHA-256 in the manifest (corrupt or altered); {REBUILD_HINT}"
            )
    return manifest


def manifest_value(manifest: dict[str, Any], section: str, key: str, directory: Path) -> Any:
    """Fetch ``manifest[section][key]`` or raise :class:`IndexFormatError`."""
    try:
        return manifest[section][key]
    except (KeyError, TypeError) as exc:
        raise IndexFormatError(
            f"{directory / MANIFEST_NAME} lacks {section}.{key}; {REBUILD_HINT}"
        ) from exc


def manifest_int(
    manifest: dict[str, Any], section: str, key: str, directory: Path, *, minimum: int = 0
) -> int:
    """Fetch an integer ``manifest[section][key] >= minimum`` or raise :class:`IndexFormatError`."""
    value = manifest_value(manifest, section, key, directory)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise IndexFormatError(
            f"{directory / MANIFEST_NAME}: {section}.{key} must be an integer >= {minimum}, "
            f"got {value!r}; {REBUILD_HINT}"
        )
    return value


# -- index files --------------------------------------------------------------------------
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
                        f"{path}:{lineno}: not a valid passage ({exc}); the index is corrupt, "
                        f"{REBUILD_HINT}"
                    ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"cannot read {path} ({exc}); {REBUILD_HINT}") from exc
    return out


def load_npy(path: Path, *, dtype: Any = None, ndim: int | None = None, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` array without pickle (``mmap``: memory-mapped read-only); any
    problem is an :class:`IndexFormatError`."""
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError) as exc:
        raise IndexFormatError(
            f"{path} is not a readable .npy array ({exc}); {REBUILD_HINT}"
        ) from exc
    if ndim is not None and arr.ndim != ndim:
        raise IndexFormatError(
            f"{path} holds a {arr.ndim}-d array, expected {ndim}-d; {REBUILD_HINT}"
        )
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise IndexFormatError(
            f"{path} holds {arr.dtype} data, expected {np.dtype(dtype)}; {REBUILD_HINT}"
        )
    return arr
