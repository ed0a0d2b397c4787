"""The files of a saved dense index, read back: the manifest's parameters, the
memory-mapped embeddings and the FAISS file.

A version folder of a :class:`~meteora.retrievers.dense.DenseRetriever` holds
``manifest.json``, ``passages.sqlite``, ``embeddings.npy`` (float32, no pickle) and, for
HNSW/IVF/IVF-PQ, ``index.faiss`` (FAISS's own format). Written by
``DenseRetriever.save`` and by :mod:`meteora.retrievers.streaming`; every check here
raises :class:`~meteora.errors.IndexFormatError` naming the file and what to do.

Example:
    >>> EMBEDDINGS_NAME, FAISS_NAME
    ('embeddings.npy', 'index.faiss')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meteora._checks import check_embedding_rows
from meteora.errors import IndexFormatError
from meteora.retrievers.index_files import MANIFEST_NAME, load_npy, manifest_int

__all__ = ["EMBEDDINGS_NAME", "FAISS_NAME", "SAVED_OPTIONS", "SavedDense", "saved_dense", "load_embeddings", "read_faiss"]

EMBEDDINGS_NAME = "embeddings.npy"
FAISS_NAME = "index.faiss"

#: constructor options of a DenseRetriever, as saved in the manifest's parameters
_REQUIRED = ("index_type", "backend", "batch_size", "hnsw_m", "ef_search", "ef_construction")
_OPTIONAL = {"nlist": None, "nprobe": None, "pq_m": None, "opq": False, "rerank": 200, "train_size": None}
#: every constructor option a saved dense index records
SAVED_OPTIONS = (*_REQUIRED, *_OPTIONAL)


@dataclass(frozen=True)
class SavedDense:
    """What a dense index's manifest says: sizes, encoder name, constructor options."""

    directory: Path
    count: int
    dim: int
    encoder_name: str | None
    options: dict[str, Any]
    nlist_used: int | None
    index_type_used: str | None
    has_faiss_file: bool


def saved_dense(directory: Path, manifest: dict[str, Any]) -> SavedDense:
    """Read a dense index's manifest (already checked by ``read_manifest``).

    Raises:
        IndexFormatError: a missing parameter or an ``encoder`` entry that is not a table.
    """
    params = manifest["parameters"]
    enc_info = manifest.get("encoder") or {}
    if not isinstance(enc_info, dict):
        raise IndexFormatError(
            f"{directory / MANIFEST_NAME}: 'encoder' must be a table, got {enc_info!r}; "
            "rebuild the index and save it again"
        )
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise IndexFormatError(
            f"{directory / MANIFEST_NAME} has invalid dense-index parameters (missing {', '.join(missing)}); "
            "rebuild the index and save it again"
        )
    options = {name: params[name] for name in _REQUIRED}
    options.update({name: params.get(name, default) for name, default in _OPTIONAL.items()})
    return SavedDense(
        directory=directory,
        count=manifest_int(manifest, "counts", "passages", directory),
        dim=manifest_int(manifest, "counts", "dim", directory, minimum=1),
        encoder_name=enc_info.get("name"),
        options=options,
        nlist_used=params.get("nlist_used"),
        index_type_used=params.get("index_type_used"),
        has_faiss_file=FAISS_NAME in manifest["files"],  # only a file the manifest vouched for
    )


def load_embeddings(path: Path, count: int | None = None, dim: int | None = None) -> np.ndarray:
    """Memory-map a float32 ``(N, d)`` embedding matrix saved without pickle (read-only:
    pages are read on demand and shared by every process serving the index).

    Raises:
        IndexFormatError: not such a matrix, or not ``count × dim`` when those are given.
    """
    emb = load_npy(path, dtype=np.float32, ndim=2, mmap=True)
    if count is not None and dim is not None and emb.shape != (count, dim):
        raise IndexFormatError(
            f"{path.parent} holds embeddings of shape {emb.shape}, but the manifest says "
            f"{count} × {dim}; rebuild the index and save it again"
        )
    # A damaged row (NaN, infinite, all zeros) would rank silently wrong: read every row
    # once, a block at a time with pread (not through the mapping, whose touched pages would
    # stay in the serving process's memory)
    width = emb.shape[1] * emb.dtype.itemsize
    fd = os.open(path, os.O_RDONLY)
    try:
        def read(start: int, stop: int) -> np.ndarray:
            data = os.pread(fd, (stop - start) * width, emb.offset + start * width)
            return np.frombuffer(data, dtype=emb.dtype).reshape(stop - start, emb.shape[1])

        check_embedding_rows(
            emb.shape, str(path), error=IndexFormatError, read=read,
            hint="the index's stored embeddings are damaged: rebuild it with retriever.index(passages) and save it again",
        )
    finally:
        os.close(fd)
    return emb


def read_faiss(path: Path, count: int, dim: int) -> Any:
    """Read a FAISS index file and check it holds ``count`` vectors of ``dim``.

    Raises:
        IndexFormatError: unreadable, or another size than the manifest's.
    """
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(
            f"{path} is not a readable FAISS index ({str(exc).splitlines()[0] if str(exc) else exc}); "
            "rebuild the index and save it again"
        ) from exc
    if index.ntotal != count or index.d != dim:
        raise IndexFormatError(
            f"{path} holds {index.ntotal} vectors of dimension {index.d}, expected {count} × {dim}; "
            "rebuild the index and save it again"
        )
    return index
