"""The on-disk index format: checked manifests, and versions published atomically.

A saved index folder ``DIR`` looks like this::

    DIR/
      meteora-index.json          pointer: {"format": "meteora-index-pointer", "current": "v-…"}
      v-20261130T021500Z-4242-1a2b/   the current version: manifest.json + the retriever's files
      v-20261130T020000Z-4100-9f0e/   the previous version, kept for readers that opened it
      .meteora-index.lock         the writers' lock

* **Saving** (:func:`publish_index`) writes a complete new version folder beside the
  current one and then swaps the pointer with one atomic rename. The name ``DIR`` never
  disappears and always leads to a complete index — the old one or the new one — even
  when the writer is killed at any instant. Writers take a lock, so two processes saving
  to the same folder queue instead of interleaving. Leftovers of a killed writer (hidden
  ``.v-….partial`` folders) and versions older than the previous one are removed by the
  next save, and by a load that finds no writer at work.
* **Refusing what is not ours**: a target that is a file, or a folder holding anything
  but a meteora index, is refused with :class:`~meteora.errors.UnsafeOverwriteError`;
  nothing is moved or deleted.
* **Loading** (:func:`load_index`) follows the pointer. If the version it opened is
  removed under it by two quick saves, it follows the pointer again.
* **Manifests** (:func:`read_manifest`) list every file with its SHA-256. Every entry must
  be a plain relative path inside the version folder (no ``..``, no absolute paths, no
  symbolic links leading out), the files a loader needs must be listed, and every listed
  file is hashed before use.

Folders written by meteora 0.1 (``manifest.json`` at the top, no pointer) are still read,
and become versioned on the next save.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "idx"
    >>> def write(folder):
    ...     _ = (folder / "passages.jsonl").write_text("")
    ...     _ = write_manifest(folder, "bm25", counts={"passages": 0}, parameters={})
    >>> _ = publish_index(d, write)
    >>> sorted(read_manifest(resolve_index(d), "bm25")["files"])
    ['passages.jsonl']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from meteora._io import atomic_write_bytes, atomic_write_json, fsync_tree, read_json
from meteora.errors import (
    IndexFormatError,
    InvalidInputError,
    MeteoraError,
    UnsafeOverwriteError,
)
from meteora.types import Passage

__all__ = [
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "MANIFEST_NAME",
    "PASSAGES_NAME",
    "POINTER_NAME",
    "LOCK_NAME",
    "check_index_target",
    "publish_index",
    "resolve_index",
    "load_index",
    "read_manifest",
    "write_manifest",
    "manifest_value",
    "manifest_int",
    "read_passages",
    "write_passages",
    "load_npy",
]

logger = logging.getLogger(__name__)

INDEX_FORMAT = "meteora-index"
INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PASSAGES_NAME = "passages.jsonl"
POINTER_NAME = "meteora-index.json"
POINTER_FORMAT = "meteora-index-pointer"
LOCK_NAME = ".meteora-index.lock"
#: seconds a writer waits for another writer's lock before giving up
LOCK_TIMEOUT_S = 600.0

#: kind written in the manifest -> "module:Class" that loads it
KINDS: dict[str, str] = {
    "bm25": "meteora.retrievers.bm25:BM25Retriever",
    "dense": "meteora.retrievers.dense:DenseRetriever",
    "hybrid": "meteora.retrievers.hybrid:HybridRetriever",
}

REBUILD_HINT = "rebuild it with retriever.index(passages) and save it again"

_VERSION_RE = re.compile(r"^v-[0-9]{8}T[0-9]{6}Z-[0-9]+-[0-9a-f]{8}$")
_PARTIAL_RE = re.compile(
    r"^(\.v-[0-9]{8}T[0-9]{6}Z-[0-9]+-[0-9a-f]{8}\.partial"  # a version being written
    r"|\.meteora-index\.json\.[A-Za-z0-9_]+\.tmp)$"  # the pointer being replaced
)

T = TypeVar("T")


# -- publishing ---------------------------------------------------------------------------
def _new_version_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"v-{stamp}-{os.getpid()}-{secrets.token_hex(4)}"


def _read_pointer(directory: Path) -> str | None:
    """The current version's folder name, or ``None`` when there is no pointer."""
    path = directory / POINTER_NAME
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not readable JSON ({exc}); {REBUILD_HINT}") from exc
    current = data.get("current") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != POINTER_FORMAT
        or not isinstance(current, str)
        or not _VERSION_RE.match(current)
    ):
        raise IndexFormatError(
            f"{path} is not a valid meteora index pointer (it must name a version folder "
            f"v-…); {REBUILD_HINT}"
        )
    return current


def _legacy_entries(directory: Path) -> set[str] | None:
    """Top-level names of a flat (meteora 0.1) index in ``directory``, or ``None``."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    names = {MANIFEST_NAME}
    for name in files:
        if isinstance(name, str) and name and not name.startswith(("/", "..")):
            names.add(PurePosixPath(name).parts[0])
    return names


def _foreign_entries(directory: Path) -> list[str]:
    """Entries of an existing folder that a meteora index does not account for."""
    ours = {POINTER_NAME, LOCK_NAME}
    legacy = _legacy_entries(directory) or set()
    foreign = []
    for entry in sorted(os.listdir(directory)):
        if entry in ours or entry in legacy:
            continue
        if _VERSION_RE.match(entry) or _PARTIAL_RE.match(entry):
            continue
        foreign.append(entry)
    return foreign


def check_index_target(directory: str | os.PathLike[str]) -> Path:
    """Refuse a save target that is not a new, empty or meteora-index folder.

    Raises:
        UnsafeOverwriteError: ``directory`` is a file, or a folder that holds other things.
    """
    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        for parent in directory.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InvalidInputError(
                        f"cannot save an index at {directory}: {parent} is a file, not a folder; "
                        "choose a path whose parents are folders"
                    )
                break
        return directory
    if not directory.is_dir():
        raise UnsafeOverwriteError(
            f"{directory} exists and is not a folder; an index is saved as a folder and meteora "
            "never replaces a file: choose another path"
        )
    foreign = _foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UnsafeOverwriteError(
            f"{directory} is not empty and is not a meteora index (it holds {shown}); meteora "
            "only replaces an index it wrote: save to a new or empty folder"
        )
    return directory


def _lock(directory: Path, timeout: float):
    from filelock import FileLock

    return FileLock(str(directory / LOCK_NAME), timeout=timeout)


def _clean(directory: Path, keep: Iterable[str]) -> None:
    """Remove partial versions and versions not in ``keep`` (caller holds the lock)."""
    keep = set(keep)
    for entry in os.listdir(directory):
        if _PARTIAL_RE.match(entry) or (_VERSION_RE.match(entry) and entry not in keep):
            logger.debug("removing old index files %s", directory / entry)
            path = directory / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _remove_legacy(directory: Path) -> None:
    """Remove the files of a flat (meteora 0.1) index once a version replaces it."""
    names = _legacy_entries(directory)
    if not names:
        return
    # the manifest goes first: from then on the folder no longer reads as a flat index
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / MANIFEST_NAME)
    for name in names - {MANIFEST_NAME}:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def publish_index(
    directory: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Path:
    """Write a new version of the index in ``directory`` and make it current atomically.

    Args:
        directory: the index folder (created when missing).
        write: fills an empty folder with the index files and its manifest.
        lock_timeout: seconds to wait for another process saving to the same folder.

    Returns:
        ``directory``.

    Raises:
        UnsafeOverwriteError: ``directory`` is a file or a folder that is not a meteora index.
        InvalidInputError: a parent of ``directory`` is a file.
    """
    directory = check_index_target(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create the index folder {directory} ({exc})") from exc
    try:
        try:
            _publish_locked(directory, write, lock_timeout)
        except MeteoraError:
            raise
        except OSError as exc:  # disk full, read-only folder, permissions...
            raise MeteoraError(
                f"cannot write the index into {directory} ({type(exc).__name__}: {exc}); the "
                "previous index, if any, is unchanged: free space or fix the folder's "
                "permissions and save again"
            ) from exc
    except BaseException:
        if created:  # a first save that failed leaves nothing behind
            with contextlib.suppress(OSError):
                os.unlink(directory / LOCK_NAME)
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty: a concurrent writer may have succeeded
        raise
    return directory


def _publish_locked(directory: Path, write: Callable[[Path], None], lock_timeout: float) -> None:
    from filelock import Timeout

    try:
        with _lock(directory, lock_timeout):
            check_index_target(directory)  # again: another writer may have changed it
            previous = _read_pointer_or_none(directory)
            name = _new_version_name()
            partial = directory / f".{name}.partial"
            partial.mkdir()
            try:
                write(partial)
                fsync_tree(partial)
                os.rename(partial, directory / name)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            atomic_write_json(directory / POINTER_NAME, {"format": POINTER_FORMAT, "current": name})
            _remove_legacy(directory)
            _clean(directory, keep={name, previous} - {None})
    except Timeout as exc:
        raise MeteoraError(
            f"another process has been saving to {directory} for over {lock_timeout:.0f} s "
            f"(lock file {directory / LOCK_NAME}); wait for it, or remove the lock file if no "
            "process is saving"
        ) from exc


def _read_pointer_or_none(directory: Path) -> str | None:
    try:
        return _read_pointer(directory)
    except IndexFormatError:
        logger.warning("replacing the unreadable index pointer in %s", directory)
        return None


def resolve_index(directory: str | os.PathLike[str]) -> Path:
    """The folder holding the current version's ``manifest.json``.

    Raises:
        IndexFormatError: ``directory`` is not a meteora index folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexFormatError(
            f"{directory} is not a folder; pass the folder written by retriever.save(dir)"
        )
    current = _read_pointer(directory)
    if current is not None:
        return directory / current
    if (directory / MANIFEST_NAME).is_file():  # meteora 0.1 layout, or a hybrid's member
        return directory
    raise IndexFormatError(
        f"{directory} is not a meteora index (no {POINTER_NAME} or {MANIFEST_NAME}); "
        "pass the folder written by retriever.save(dir)"
    )


def _clean_if_idle(directory: Path, current: Path) -> None:
    """After a load: remove leftovers of killed writers when no writer is at work."""
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    partial = [e for e in entries if _PARTIAL_RE.match(e)]
    versions = [e for e in entries if _VERSION_RE.match(e)]
    if not partial and len(versions) <= 2:
        return
    from filelock import Timeout

    try:
        with _lock(directory, timeout=0):
            pointer = _read_pointer(directory)
            keep = {pointer} if pointer else set()
            if current.parent == directory:
                keep.add(current.name)
            if len(versions) <= 2:
                keep.update(versions)
            _clean(directory, keep)
    except (Timeout, OSError, IndexFormatError):
        return  # a writer is at work (it cleans up itself) or the folder is read-only


def load_index(directory: str | os.PathLike[str], load: Callable[[Path], T], *, attempts: int = 3) -> T:
    """Run ``load`` on the current version of the index in ``directory``.

    If the version is removed while ``load`` reads it (two saves finished meanwhile), the
    pointer is followed again, up to ``attempts`` times.
    """
    directory = Path(directory)
    for attempt in range(attempts):
        current = resolve_index(directory)
        try:
            result = load(current)
        except (IndexFormatError, FileNotFoundError):
            if attempt + 1 < attempts and current != directory and resolve_index(directory) != current:
                logger.debug("index %s was replaced while loading; loading the new version", directory)
                continue
            raise
        if current != directory:
            _clean_if_idle(directory, current)
        return result
    raise AssertionError("unreachable")


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


def _confined(directory: Path, name: Any, manifest_path: Path) -> Path:
    """``directory / name`` if ``name`` is a plain relative path that stays inside."""
    bad = (
        not isinstance(name, str)
        or not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
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


def load_npy(path: Path, *, dtype: Any = None, ndim: int | None = None) -> np.ndarray:
    """Load a ``.npy`` array without pickle; any problem is an :class:`IndexFormatError`."""
    try:
        arr = np.load(path, allow_pickle=False)
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
