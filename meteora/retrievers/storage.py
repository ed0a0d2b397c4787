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
  file is hashed before use. The manifest and the other files of one version are read
  and written in :mod:`meteora.retrievers.index_files`.

Folders written by meteora 0.1 (``manifest.json`` at the top, no pointer) are still read,
and become versioned on the next save.

Example:
    >>> import tempfile, pathlib
    >>> from meteora.retrievers.index_files import read_manifest, write_manifest
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
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from meteora._io import atomic_write_json, fsync_tree, read_json
from meteora.errors import (
    IndexFormatError,
    InvalidInputError,
    MeteoraError,
    UnsafeOverwriteError,
)
from meteora.retrievers.index_files import (
    INDEX_FORMAT,
    MANIFEST_NAME,
    REBUILD_HINT,
    is_plain_relative,
)

__all__ = [
    "POINTER_NAME",
    "LOCK_NAME",
    "check_index_target",
    "publish_index",
    "resolve_index",
    "load_index",
]

logger = logging.getLogger(__name__)

POINTER_NAME = "meteora-index.json"
POINTER_FORMAT = "meteora-index-pointer"
LOCK_NAME = ".meteora-index.lock"
#: seconds a writer waits for another writer's lock before giving up
LOCK_TIMEOUT_S = 600.0

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


def _legacy_files(directory: Path) -> list[str] | None:
    """The files a flat (meteora 0.1) index in ``directory`` lists, or ``None`` when the
    folder holds no such index.

    Only plain relative names of regular files inside the folder count: cleaning up the
    old layout applies the same confinement as loading it.

    Raises:
        UnsafeOverwriteError: the old manifest lists a name that is not a plain relative
            path, leads outside the folder, or is not a regular file (a folder, a link):
            meteora will not delete what it cannot prove is an index file.
    """
    path = directory / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
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
    root = directory.resolve()
    names = []
    for name in files:
        if not is_plain_relative(name) or name == MANIFEST_NAME:
            raise UnsafeOverwriteError(_legacy_refusal(path, name, "is not a plain relative file name inside the folder"))
        target = directory / name
        if not (target.exists() or target.is_symlink()):
            continue  # nothing to remove
        if target.is_symlink() or not target.is_file():
            raise UnsafeOverwriteError(_legacy_refusal(path, name, "is not a regular file"))
        try:
            target.resolve().relative_to(root)
        except ValueError:
            raise UnsafeOverwriteError(_legacy_refusal(path, name, "leads outside the folder")) from None
        names.append(name)
    return names


def _legacy_refusal(manifest: Path, name: object, why: str) -> str:
    return (
        f"{manifest} (an old-layout meteora index manifest) lists {name!r}, which {why}; "
        "meteora deletes only the regular files of an index it can prove it wrote, so it will "
        "not save over this folder: move its contents away or save to a new folder"
    )


def _legacy_owned(directory: Path, files: Iterable[str]) -> set[str]:
    """Top-level entries of ``directory`` made only of the flat index's listed files."""
    listed = set(files)
    owned = {MANIFEST_NAME} | {n for n in listed if "/" not in n}
    for entry in {n.split("/", 1)[0] for n in listed if "/" in n}:
        top = directory / entry
        if top.is_symlink() or not top.is_dir():
            continue
        inside = []
        clean = True
        for dirpath, dirnames, filenames in os.walk(top):
            for d in dirnames:
                if (Path(dirpath) / d).is_symlink():
                    clean = False
            for f in filenames:
                inside.append((Path(dirpath) / f).relative_to(directory).as_posix())
        if clean and all(n in listed for n in inside):
            owned.add(entry)
    return owned


def _foreign_entries(directory: Path) -> list[str]:
    """Entries of an existing folder that a meteora index does not account for.

    Raises:
        UnsafeOverwriteError: an old-layout manifest lists something meteora may not delete.
    """
    ours = {POINTER_NAME, LOCK_NAME}
    legacy = _legacy_files(directory)
    owned = _legacy_owned(directory, legacy) if legacy is not None else set()
    foreign = []
    for entry in sorted(os.listdir(directory)):
        if entry in ours or entry in owned:
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
    """Remove the files of a flat (meteora 0.1) index once a version replaces it: exactly
    the regular files its manifest lists (checked by :func:`_legacy_files`), then the
    folders they leave empty."""
    names = _legacy_files(directory)
    if names is None:
        return
    # the manifest goes first: from then on the folder no longer reads as a flat index
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / MANIFEST_NAME)
    parents: set[Path] = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
        parents.update(p for p in PurePosixPath(name).parents if str(p) != ".")
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # only when empty
            os.rmdir(directory / parent)


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


def load_index(directory: str | os.PathLike[str], load: Callable[[Path], T], *, attempts: int = 20) -> T:
    """Run ``load`` on the current version of the index in ``directory``.

    If the version is removed while ``load`` reads it (two saves finished meanwhile), the
    pointer is followed again, up to ``attempts`` times. Each retry needs a newer
    version than the one that vanished, so retries only happen while writers are saving
    faster than the reader reads; 20 lets a reader through two writers saving in a tight
    loop on a loaded machine (3 was once not enough in CI).
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
