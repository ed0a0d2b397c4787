"""Build an index from a corpus larger than memory, straight into an index folder.

:func:`build_index` reads the corpus a chunk at a time (JSONL and Parquet incrementally,
see :func:`meteora.corpus.iter_passage_chunks`), encodes each chunk in batches and
appends what it gets to files in the new index version as it goes:

* the passages to ``passages.sqlite`` (:class:`~meteora.retrievers.passage_store.PassageStoreWriter`);
* dense embeddings to ``embeddings.npy`` (:class:`~meteora.retrievers.npy_stream.NpyAppender`);
  at the end the FAISS index is trained on a seeded sample read from the memory-mapped
  file and filled block by block (:mod:`meteora.retrievers.ann`);
* BM25 token ids to a temporary file; at the end bm25s builds its score matrix from
  them (:meth:`bm25s.BM25.build_index_from_ids`, one document at a time).

So memory holds one chunk, the training sample and the index structure itself (the
FAISS index, bm25s's score matrix), never the corpus. The version is published like
``retriever.save`` (:mod:`meteora.retrievers.storage`): atomically, old-or-new after a
kill, never over a folder that is not an index. The result equals
``retriever.index(passages).save(directory)`` on the same corpus: same ids, same
embeddings, same search results.

Example:
    >>> import tempfile, pathlib
    >>> from meteora.retrievers.bm25 import BM25Retriever
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "c.jsonl").write_text('{"text": "fever in children"}\\n{"text": "statins"}\\n')
    >>> r = build_index(d / "c.jsonl", d / "idx", BM25Retriever(backend="numpy"), chunk_size=1)
    >>> r.search("fever", k=1).ids
    ['0']
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError
from meteora.retrievers.ann import (
    AnnSpec,
    add_blocks,
    apply_search_params,
    default_nlist,
    empty_faiss,
)
from meteora.retrievers.base import Retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.dense_files import EMBEDDINGS_NAME, FAISS_NAME
from meteora.retrievers.hybrid import HybridRetriever
from meteora.retrievers.npy_stream import NpyAppender
from meteora.retrievers.passage_store import PASSAGE_STORE_NAME, PassageStoreWriter
from meteora.retrievers.storage import publish_index
from meteora.types import Passage, passage_from

__all__ = ["build_index", "index_writer", "IndexWriter"]

logger = logging.getLogger(__name__)

_TOKENS_NAME = ".tokens.int32"  # dot file: never listed in a manifest, removed before it

#: fills an empty (trained) FAISS index from the memory-mapped embeddings
AddVectors = Callable[[AnnSpec, Any, np.ndarray], None]


def _default_add(spec: AnnSpec, index: Any, embeddings: np.ndarray) -> None:
    add_blocks(index, embeddings)


class IndexWriter:
    """Writes one retriever's files into a version folder, a chunk at a time."""

    def add(self, passages: Sequence[Passage], where: Sequence[str] | None, embeddings: np.ndarray | None) -> None:
        """Append a chunk (``embeddings``: its precomputed rows, dense members only)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Build the index structure and write the manifest."""
        raise NotImplementedError

    def abort(self) -> None:
        """Release open files after a failure (the folder is discarded)."""


class _StoreOwner(IndexWriter):
    """Writes ``passages.sqlite`` (or copies the one a sibling wrote)."""

    def __init__(self, folder: Path, store_from: Path | None) -> None:
        self.folder = folder
        self.count = 0
        self._store_from = store_from
        self._store = PassageStoreWriter(folder / PASSAGE_STORE_NAME) if store_from is None else None

    def _add_passages(self, passages: Sequence[Passage], where: Sequence[str] | None) -> None:
        if self._store is not None:
            self._store.add(passages, where)
        self.count += len(passages)

    def _finish_store(self) -> None:
        if self._store is not None:
            self._store.close()
        elif self._store_from is not None:
            shutil.copyfile(self._store_from, self.folder / PASSAGE_STORE_NAME)
        if self.count == 0:
            raise InvalidInputError("cannot index an empty corpus; give at least one passage")

    def abort(self) -> None:
        if self._store is not None:
            self._store.abort()


class _DenseWriter(_StoreOwner):
    def __init__(self, retriever: DenseRetriever, folder: Path, store_from: Path | None, add_vectors: AddVectors) -> None:
        super().__init__(folder, store_from)
        self.retriever = retriever
        self.add_vectors = add_vectors
        self._emb: NpyAppender | None = None

    def add(self, passages: Sequence[Passage], where: Sequence[str] | None, embeddings: np.ndarray | None) -> None:
        r = self.retriever
        if embeddings is None:
            emb = r._encode([p.text for p in passages])
        else:
            emb = r._given_embeddings(embeddings, len(passages), self._emb.dim if self._emb else None)
        if self._emb is None:
            self._emb = NpyAppender(self.folder / EMBEDDINGS_NAME, emb.shape[1])
        self._add_passages(passages, where)
        self._emb.append(emb)

    def finish(self) -> None:
        self._finish_store()
        assert self._emb is not None
        self._emb.close()
        r = self.retriever
        emb = np.load(self.folder / EMBEDDINGS_NAME, mmap_mode="r")
        n, d = emb.shape
        spec = r.ann_spec(n)
        r.index_type_used = spec.index_type if r.engine == "faiss" else "flat"
        r._nlist_used = default_nlist(n, r.nlist) if spec.index_type in ("ivf", "ivfpq") else None
        if r.engine == "faiss" and spec.index_type != "flat":
            import faiss

            t0 = time.perf_counter()
            index = empty_faiss(spec, d, n, emb)
            self.add_vectors(spec, index, emb)
            apply_search_params(spec, index)
            faiss.write_index(index, str(self.folder / FAISS_NAME))
            logger.info("built %s over %d vectors in %.1f s", spec.factory(d, n), n, time.perf_counter() - t0)
        del emb
        r._write_manifest(self.folder, n, d)

    def abort(self) -> None:
        super().abort()
        if self._emb is not None:
            self._emb.close()


class _TokenCorpus:
    """Token ids of every passage from a flat int32 file, one passage at a time (what
    bm25s's index builder iterates over), so the corpus is never held as Python lists."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self.tokens = tokens
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        tokens, offsets = self.tokens, self.offsets
        for i in range(len(offsets) - 1):
            yield tokens[offsets[i] : offsets[i + 1]].tolist()


class _BM25Writer(_StoreOwner):
    def __init__(self, retriever: BM25Retriever, folder: Path, store_from: Path | None) -> None:
        super().__init__(folder, store_from)
        self.retriever = retriever
        self.vocab: dict[str, int] = {}
        self._lengths: list[np.ndarray] = []
        self._tokens = open(folder / _TOKENS_NAME, "xb") if retriever.engine != "rank_bm25" else None

    def add(self, passages: Sequence[Passage], where: Sequence[str] | None, embeddings: np.ndarray | None) -> None:
        self._add_passages(passages, where)
        if self._tokens is None:
            return  # rank-bm25 has no on-disk form: it is rebuilt from the passages on load
        vocab = self.vocab
        ids: list[int] = []
        lengths = np.empty(len(passages), dtype=np.int64)
        for j, tokens in enumerate(self.retriever.tokenize([p.text for p in passages])):
            lengths[j] = len(tokens)
            ids.extend(vocab.setdefault(t, len(vocab)) for t in tokens)
        self._tokens.write(np.asarray(ids, dtype=np.int32).tobytes())
        self._lengths.append(lengths)

    def finish(self) -> None:
        self._finish_store()
        path = self.folder / _TOKENS_NAME
        if self._tokens is not None:
            self._tokens.close()
            if self.vocab:
                self._build_bm25s(path)
            path.unlink()
        self.retriever._write_manifest(self.folder, self.count, len(self.vocab))

    def _build_bm25s(self, path: Path) -> None:
        t0 = time.perf_counter()
        offsets = np.zeros(self.count + 1, dtype=np.int64)
        np.cumsum(np.concatenate(self._lengths), out=offsets[1:])
        tokens = np.memmap(path, dtype=np.int32, mode="r") if offsets[-1] else np.zeros(0, dtype=np.int32)
        model = self.retriever._bm25s_model()
        with np.errstate(all="ignore"):
            model.scores = model.build_index_from_ids(
                unique_token_ids=list(range(len(self.vocab))),
                corpus_token_ids=_TokenCorpus(tokens, offsets),
                show_progress=False,
            )
        model.vocab_dict = self.vocab
        model.unique_token_ids_set = set(self.vocab.values())
        del tokens
        model.save(str(self.folder / "bm25s"), show_progress=False, allow_pickle=False)
        logger.info("built the BM25 matrix of %d passages in %.1f s", self.count, time.perf_counter() - t0)

    def abort(self) -> None:
        super().abort()
        if self._tokens is not None:
            self._tokens.close()


class _HybridWriter(IndexWriter):
    def __init__(self, retriever: HybridRetriever, folder: Path, add_vectors: AddVectors) -> None:
        self.retriever = retriever
        self.folder = folder
        self.members: list[IndexWriter] = []
        first_store: Path | None = None
        for name, member in retriever.members.items():
            (folder / name).mkdir()
            self.members.append(index_writer(member, folder / name, store_from=first_store, add_vectors=add_vectors))
            first_store = first_store or folder / name / PASSAGE_STORE_NAME
        self.count = 0

    def add(self, passages: Sequence[Passage], where: Sequence[str] | None, embeddings: np.ndarray | None) -> None:
        for w in self.members:
            w.add(passages, where, embeddings if isinstance(w, _DenseWriter) else None)
        self.count += len(passages)

    def finish(self) -> None:
        for w in self.members:
            w.finish()
        self.retriever._write_manifest(self.folder, self.count)

    def abort(self) -> None:
        for w in self.members:
            w.abort()


def index_writer(
    retriever: Retriever, folder: Path, *, store_from: Path | None = None, add_vectors: AddVectors | None = None
) -> IndexWriter:
    """The writer of ``retriever``'s kind into the empty version folder ``folder``.

    Args:
        retriever: an unindexed retriever whose settings the index takes.
        folder: the version folder being written.
        store_from: copy this passage store instead of writing one (hybrid members).
        add_vectors: fills the trained FAISS index (default: block by block here;
            :mod:`meteora.distributed` adds shards in parallel).
    """
    add_vectors = add_vectors or _default_add
    if isinstance(retriever, DenseRetriever):
        return _DenseWriter(retriever, folder, store_from, add_vectors)
    if isinstance(retriever, BM25Retriever):
        return _BM25Writer(retriever, folder, store_from)
    if isinstance(retriever, HybridRetriever):
        return _HybridWriter(retriever, folder, add_vectors)
    raise InvalidInputError(
        f"build_index() builds BM25Retriever, DenseRetriever and HybridRetriever indexes, got {type(retriever).__name__}"
    )


def _chunks(source: Any, chunk_size: int) -> Iterator[tuple[list[Passage], list[str] | None]]:
    if isinstance(source, (str, os.PathLike)):
        from meteora.corpus import iter_passage_chunks

        yield from iter_passage_chunks(source, chunk_size)
        return
    if isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise InvalidInputError("source must be a corpus file path or an iterable of passages (str, dict or Passage)")
    chunk: list[Passage] = []
    for i, item in enumerate(source):
        chunk.append(passage_from(item, i))
        if len(chunk) == chunk_size:
            yield chunk, None
            chunk = []
    if chunk:
        yield chunk, None


def write_chunks(
    writer: IndexWriter, chunks: Iterable[tuple[Sequence[Passage], Sequence[str] | None, np.ndarray | None]]
) -> int:
    """Feed ``(passages, where, embeddings)`` chunks to ``writer`` and finish it; returns
    the number of passages (logs progress)."""
    t0 = time.perf_counter()
    n = 0
    try:
        for passages, where, emb in chunks:
            writer.add(passages, where, emb)
            n += len(passages)
            logger.info("indexed %d passages (%.0f/s)", n, n / max(time.perf_counter() - t0, 1e-9))
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return n


def build_index(
    source: str | os.PathLike[str] | Iterable[Any],
    directory: str | os.PathLike[str],
    retriever: Retriever | None = None,
    *,
    embeddings: np.ndarray | None = None,
    chunk_size: int = 10_000,
) -> Retriever:
    """Index ``source`` into the folder ``directory`` chunk by chunk; returns the loaded index.

    Args:
        source: a corpus file (``.jsonl``, ``.parquet``, ``.json`` or text; see
            :mod:`meteora.corpus`) or an iterable of passages (str, dict or Passage).
        directory: the index folder (a new, empty or meteora-index folder).
        retriever: an unindexed retriever whose settings the index takes (default: BM25
            + MiniLM with ``index_type="auto"``, resolved once the corpus size is known:
            exact up to 100,000 passages, IVF-PQ above).
        embeddings: precomputed ``(N, d)`` passage embeddings in corpus order (an array or
            ``np.load(..., mmap_mode="r")``) for the dense index; read a chunk at a time.
        chunk_size: passages read, encoded and written per step.

    Raises:
        InvalidInputError: bad passages (with ``file:line``), duplicate ids, an empty corpus,
            ``embeddings`` of the wrong shape.
        UnsafeOverwriteError: ``directory`` is a file or a folder that is not an index.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if retriever is None:
        retriever = HybridRetriever([BM25Retriever(), DenseRetriever(index_type="auto")])
    if embeddings is not None:
        if np.ndim(embeddings) != 2:
            raise InvalidInputError(f"embeddings must be an (N, d) array, got shape {np.shape(embeddings)}")
        members = retriever.retrievers if isinstance(retriever, HybridRetriever) else [retriever]
        if sum(isinstance(m, DenseRetriever) for m in members) != 1:
            raise InvalidInputError("embeddings= needs exactly one dense retriever to give them to")

    def chunks() -> Iterator[tuple[list[Passage], list[str] | None, np.ndarray | None]]:
        start = 0
        for passages, where in _chunks(source, chunk_size):
            emb = None
            if embeddings is not None:
                emb = np.asarray(embeddings[start : start + len(passages)])
                if len(emb) != len(passages):
                    raise InvalidInputError(
                        f"embeddings has {len(embeddings)} rows but the corpus has more passages; give one row per passage"
                    )
            start += len(passages)
            yield passages, where, emb
        if embeddings is not None and start != len(embeddings):
            raise InvalidInputError(f"embeddings has {len(embeddings)} rows for {start} passages; give one row per passage")

    def write(folder: Path) -> None:
        write_chunks(index_writer(retriever, folder), chunks())

    publish_index(directory, write)
    return load_like(retriever, directory)


def load_like(retriever: Retriever, directory: str | os.PathLike[str]) -> Retriever:
    """Load the index in ``directory`` with ``retriever``'s encoder (not loaded twice)."""
    if isinstance(retriever, DenseRetriever):
        return DenseRetriever.load(directory, encoder=retriever._encoder)
    if isinstance(retriever, HybridRetriever):
        dense = [m for m in retriever.retrievers if isinstance(m, DenseRetriever)]
        encoder = dense[0]._encoder if len(dense) == 1 else None
        return HybridRetriever.load(directory, encoder=encoder)
    return type(retriever).load(directory)

