"""Where ONNX exports live and how they are keyed (no torch, no onnxruntime imported).

An export is a folder ``$METEORA_HOME/onnx/<kind>-<key>/`` holding ``model.onnx``,
``tokenizer.json`` (the tokenizer the torch model runs, as ``tokenizers`` saves it) and
``meteora-export.json`` (the manifest: what it was exported from, the settings the
runtime needs, and the check against torch). The key is a digest of every source file
that decides the outputs (weights, configurations, tokenizer files; an adapter's
weights and configuration), so an export never outlives a change of its sources.
Folders are published atomically under a lock (:func:`publish_export`): a reader sees a
complete export or none, and two processes never export the same sources at once.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text("{}")
    >>> len(source_key("sentence-encoder", [d]))
    64
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meteora._io import atomic_directory, atomic_write_json, read_json
from meteora.settings import meteora_home

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MANIFEST_NAME",
    "exports_root",
    "source_files",
    "source_key",
    "export_folder",
    "read_export",
    "publish_export",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "meteora-onnx"
#: Bumped when the export's layout or the runtime's reading of it changes.
EXPORT_VERSION = 1
MANIFEST_NAME = "meteora-export.json"
#: Files of a model or adapter folder that decide its outputs (other files, such as a
#: README or a provenance note, do not take part in the key).
_SOURCE_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
_NOT_SOURCES = {"provenance.json", MANIFEST_NAME}

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def exports_root() -> Path:
    """``$METEORA_HOME/onnx``: the folder holding every export."""
    return meteora_home() / "onnx"


def source_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The files of a model (or adapter) folder that decide its outputs: its own
    ``.json``/``.safetensors``/``.txt``/``.model`` files and those of its module
    sub-folders (sentence-transformers' ``1_Pooling/`` and the like), sorted.

    Example:
        >>> source_files("/no/such/folder")
        []
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and path.name not in _NOT_SOURCES:
            out.append(path)
        elif path.is_dir() and not path.name.startswith(".") and (path / "config.json").is_file():
            out.extend(p for p in sorted(path.iterdir()) if p.is_file() and p.suffix == ".json")
    return out


def _file_digest(path: Path) -> str:
    """sha256 of a file, remembered per process by (real path, size, mtime)."""
    st = path.stat()
    memo = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _digests_lock:
        hit = _digests.get(memo)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _digests_lock:
        _digests[memo] = digest
    return digest


def source_key(kind: str, folders: Sequence[str | os.PathLike[str]], **settings: Any) -> str:
    """The digest that names an export: ``kind``, :data:`EXPORT_VERSION`, the content of
    every :func:`source_files` file of each folder (by its name inside the folder) and the
    given settings.

    Example:
        >>> source_key("x", []) != source_key("y", [])
        True
    """
    h = hashlib.sha256()
    h.update(json.dumps([EXPORT_FORMAT, EXPORT_VERSION, kind, settings], sort_keys=True).encode())
    for i, folder in enumerate(folders):
        root = Path(folder)
        for path in source_files(root):
            h.update(json.dumps([i, path.relative_to(root).as_posix(), _file_digest(path)]).encode())
    return h.hexdigest()


def export_folder(kind: str, key: str) -> Path:
    """The folder of the export of ``kind`` keyed ``key``."""
    return exports_root() / f"{kind}-{key[:24]}"


def read_export(folder: Path, kind: str, key: str) -> dict[str, Any] | None:
    """The manifest of a complete export of ``kind`` keyed ``key`` in ``folder``, or ``None``."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        info = read_json(manifest)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the unreadable ONNX export manifest %s (%s)", manifest, exc)
        return None
    ok = (
        isinstance(info, dict)
        and info.get("format") == EXPORT_FORMAT
        and info.get("version") == EXPORT_VERSION
        and info.get("kind") == kind
        and info.get("key") == key
        and (folder / "model.onnx").is_file()
        and (folder / "tokenizer.json").is_file()
    )
    return info if ok else None


def publish_export(kind: str, key: str, build: Callable[[Path], dict[str, Any]], *, timeout: float = 900) -> tuple[Path, dict[str, Any]]:
    """The export of ``kind`` keyed ``key``: read when complete, else built by ``build``.

    ``build(tmp)`` writes ``model.onnx`` and ``tokenizer.json`` into the temporary folder
    ``tmp`` and returns the manifest's fields; the folder gets the manifest and is then
    moved into place. A file lock beside the folder makes a second process wait for the
    first one's export (up to ``timeout`` seconds) instead of repeating it.
    """
    from filelock import FileLock

    folder = export_folder(kind, key)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=timeout):
        info = read_export(folder, kind, key)
        if info is not None:
            return folder, info
        with atomic_directory(folder) as tmp:  # an incomplete folder of ours is replaced
            fields = build(tmp)
            info = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "kind": kind, "key": key, **fields}
            atomic_write_json(tmp / MANIFEST_NAME, info)
        return folder, info
