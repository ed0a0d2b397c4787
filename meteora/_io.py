"""Atomic file writing: nothing half-written is ever left on disk.

A file is written to a temporary sibling, flushed, fsynced and then renamed over the
target (``os.replace`` is atomic on POSIX and Windows). A directory is built in a
temporary sibling and renamed into place, so a reader sees either the old complete
directory or the new complete one.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_json(d / "x.json", {"a": 1})
    >>> read_json(d / "x.json")
    {'a': 1}
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_directory",
    "fsync_tree",
    "ensure_parent",
    "read_json",
]


def ensure_parent(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` will live in; a parent that is a file is a clear error.

    Raises:
        InvalidInputError: a component of the parent path exists and is not a folder.
    """
    from meteora.errors import InvalidInputError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        raise InvalidInputError(
            f"cannot write {path}: {blocker} is a file, not a folder; choose another path"
        ) from None
    return path


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root`` (before it is renamed into place)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # os.umask can only be read by setting it; done once, at the first write
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(directory: bool = False) -> int:
    """The permissions ``open()``/``mkdir()`` would give (tempfile's are owner-only)."""
    return (0o777 if directory else 0o666) & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename), with the
    permissions a plain ``open(path, "wb")`` would give."""
    path = ensure_parent(path)
    if path.is_dir():
        from meteora.errors import InvalidInputError

        raise InvalidInputError(f"cannot write the file {path}: it is a folder; choose a file path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, _default_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Save a numpy array in ``.npy`` format atomically (never pickled)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a UTF-8 JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place on success.

    Yields the temporary directory to fill. If the block raises, the temporary
    directory is removed and ``path`` is untouched. With ``overwrite=True`` an existing
    folder ``path`` is replaced (moved aside first, then deleted): use it only for folders
    meteora owns (converted models, trained weights whose provenance was checked) — an
    index is published with :func:`meteora.retrievers.storage.publish_index` instead,
    which never leaves the name empty. A file at ``path`` is never replaced.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "index") as tmp:
        ...     _ = (tmp / "a.txt").write_text("hi")
        >>> (root / "index" / "a.txt").read_text()
        'hi'
    """
    from meteora.errors import UnsafeOverwriteError

    path = ensure_parent(path)
    if path.exists() and not path.is_dir():
        raise UnsafeOverwriteError(
            f"{path} exists and is a file, not a folder; meteora never replaces a file with a "
            "folder: choose another path"
        )
    if path.exists() and not overwrite:
        raise UnsafeOverwriteError(f"{path} already exists; pass overwrite=True to replace it")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.old-*"):
        # a replaced copy left behind by a process killed between the two renames
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    with contextlib.suppress(OSError):
        os.chmod(tmp, _default_mode(directory=True))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
