"""Dense retrieval: sentence embeddings + FAISS inner-product search (numpy fallback).

Passages and queries are embedded by a :class:`~meteora.embeddings.Encoder` (the
packaged all-MiniLM-L6-v2 by default) and L2-normalised, so a score is the cosine
similarity (``-1..1``, higher is better). Search runs on FAISS: ``index_type="flat"``
(default, exact), ``"hnsw"``, ``"ivf"``, ``"ivfpq"`` (IVF-PQ / OPQ, the ``rerank`` best
candidates re-scored exactly) or ``"auto"`` (exact up to 100,000 passages, IVF-PQ above);
what each is and how it is built: :mod:`meteora.retrievers.ann`.

``backend="numpy"`` searches exactly with a numpy matrix product (same results as
``"flat"``); ``backend="auto"`` uses FAISS when it is importable and numpy otherwise.
Queries are embedded and searched in batches.

The corpus embeddings stay in :attr:`DenseRetriever.embeddings` (``(N, d)`` float32, in
corpus order; memory-mapped from ``embeddings.npy`` once loaded): later stages reuse them
through :meth:`DenseRetriever.embeddings_for` and :meth:`DenseRetriever.encode_queries`
without re-encoding. Corpora larger than memory are indexed by
:func:`meteora.retrievers.streaming.build_index`.

Example:
    >>> r = DenseRetriever().index(["Aspirin lowers fever.", "Statins lower LDL."])  # doctest: +SKIP
    >>> r.search("drug for high temperature", k=1).ids  # doctest: +SKIP
    ['0']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora._checks import check_embedding_rows, positive_int
from meteora.errors import IndexFormatError, InvalidInputError
from meteora.retrievers.ann import (
    BACKENDS,
    INDEX_TYPES,
    AnnSpec,
    apply_search_params,
    build_faiss,
    choose_index_type,
    exact_search,
    resolve_engine,
)
from meteora.retrievers.ann import search as ann_search
from meteora.retrievers.base import Retriever, check_k
from meteora.retrievers.dense_files import (
    EMBEDDINGS_NAME,
    FAISS_NAME,
    SAVED_OPTIONS,
    load_embeddings,
    read_faiss,
    saved_dense,
)
from meteora.retrievers.index_files import MANIFEST_NAME, read_manifest, write_manifest
from meteora.retrievers.npy_stream import NpyRowReader, save_npy_blocks
from meteora.retrievers.passage_store import open_passages, save_passages
from meteora.retrievers.storage import load_index
from meteora.types import Hit, PassageLike, Ranking, check_queries, to_passages

__all__ = ["DenseRetriever"]

logger = logging.getLogger(__name__)

def _normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32 (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


class DenseRetriever(Retriever):
    """Embedding retrieval over a FAISS (or numpy) inner-product index.

    Args:
        encoder: a :class:`~meteora.embeddings.Encoder`, a model name or folder, a
            ``SentenceTransformer``, ``None`` for the offline default MiniLM (names are
            loaded on first use), or any object with ``encode(texts, batch_size=)``
            returning an ``(n, dim)`` array plus ``dim`` and ``name`` attributes.
        index_type: ``"flat"`` (exact), ``"hnsw"``, ``"ivf"``, ``"ivfpq"`` (approximate)
            or ``"auto"`` (by corpus size, :func:`~meteora.retrievers.ann.choose_index_type`).
        backend: ``"auto"``, ``"faiss"`` or ``"numpy"`` (exact; flat only).
        batch_size: texts per encoder forward pass.
        nlist: IVF cells (``None``: ``4·sqrt(N)``, at most ``N/39``).
        nprobe: IVF cells visited per query (``None``: 1/16 of the cells, at least 16).
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW search breadth.
        ef_construction: HNSW build breadth.
        pq_m: IVF-PQ bytes per vector (``None``: ``d/8``; must divide ``d``).
        opq: IVF-PQ with an OPQ rotation.
        rerank: IVF-PQ candidates re-scored by exact inner product (at least ``k``).
        train_size: IVF training sample (``None``: 50 vectors per cell, at least 20,000).

    Example:
        >>> r = DenseRetriever("path/to/model", backend="numpy")  # doctest: +SKIP
    """

    kind = "dense"

    def __init__(
        self,
        encoder: Any = None,
        index_type: str = "flat",
        backend: str = "auto",
        batch_size: int = 64,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = 32,
        ef_search: int = 64,
        ef_construction: int = 200,
        *,
        pq_m: int | None = None,
        opq: bool = False,
        rerank: int = 200,
        train_size: int | None = None,
    ) -> None:
        super().__init__()
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.batch_size = positive_int("batch_size", batch_size)
        self.nlist = positive_int("nlist", nlist, allow_none=True)
        self.nprobe = positive_int("nprobe", nprobe, allow_none=True)
        self.hnsw_m = positive_int("hnsw_m", hnsw_m)
        self.ef_search = positive_int("ef_search", ef_search)
        self.ef_construction = positive_int("ef_construction", ef_construction)
        self.pq_m = positive_int("pq_m", pq_m, allow_none=True)
        self.rerank = positive_int("rerank", rerank)
        self.train_size = positive_int("train_size", train_size, allow_none=True)
        if not isinstance(opq, bool):
            raise InvalidInputError(f"opq must be True or False, got {opq!r}")
        self.opq = opq
        self.index_type = index_type
        self.backend = backend
        self.engine = resolve_engine(backend, index_type)
        self._encoder_spec: Any = encoder
        self._encoder: Any = None
        if encoder is not None and not isinstance(encoder, (str, os.PathLike)):
            self._encoder = self._as_encoder(encoder)
        self._expected_dim: int | None = None  # set by load(): the saved embedding size
        self.embeddings: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._faiss_index: Any = None
        self._nlist_used: int | None = None
        #: reads scattered rows of a loaded index's embeddings.npy without mapping it
        self._row_reader: NpyRowReader | None = None
        #: the index type built ("auto" resolved by corpus size)
        self.index_type_used: str | None = None

    # -- configuration ---------------------------------------------------------------
    @staticmethod
    def _as_encoder(encoder: Any) -> Any:
        from meteora.embeddings.encoder import Encoder

        if isinstance(encoder, Encoder):
            return encoder
        if callable(getattr(encoder, "encode", None)) and isinstance(
            getattr(encoder, "dim", None), int
        ):
            return encoder  # duck-typed: encode(texts, batch_size=) -> (n, dim) array, .dim, .name
        return Encoder(encoder)

    @property
    def encoder(self) -> Any:
        """The :class:`~meteora.embeddings.Encoder` (loaded on first access).

        Raises:
            IndexFormatError: its embedding size differs from the loaded index's.
        """
        if self._encoder is None:
            self._encoder = self._as_encoder(self._encoder_spec)
            self._check_encoder_dim(self._encoder)
        return self._encoder

    @property
    def encoder_name(self) -> str:
        """Name (hub id or folder) of the encoder."""
        if self._encoder is not None:
            return str(getattr(self._encoder, "name", type(self._encoder).__name__))
        if self._encoder_spec is None:
            from meteora.models import DEFAULT_EMBEDDING_MODEL

            return DEFAULT_EMBEDDING_MODEL
        return str(self._encoder_spec)

    @property
    def dim(self) -> int | None:
        """Embedding dimension (``None`` before anything is indexed or encoded)."""
        if self.embeddings.size:
            return int(self.embeddings.shape[1])
        if self._expected_dim is not None:
            return self._expected_dim
        return self._encoder.dim if self._encoder is not None else None

    def _check_encoder_dim(self, encoder: Any) -> None:
        want = self._expected_dim or (
            int(self.embeddings.shape[1]) if self.embeddings.size else None
        )
        if want is not None and encoder.dim != want:
            raise IndexFormatError(
                f"the index holds {want}-d embeddings but encoder {getattr(encoder, 'name', type(encoder).__name__)!r} produces {encoder.dim}-d ones; "
                "load the index with the encoder it was built with (encoder=...), or re-index the passages"
            )

    # -- encoding ----------------------------------------------------------------------
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.encoder.encode(list(texts), batch_size=self.batch_size)
        return _normalise(np.array(emb, dtype=np.float32))  # a copy: never normalise the caller's array in place

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Embed queries with the index's encoder: ``(len(queries), d)`` float32, L2-normalised.

        Example:
            >>> r.encode_queries(["fever"]).shape  # doctest: +SKIP
            (1, 384)
        """
        return self._encode(check_queries(queries))

    def embeddings_for(self, ids: Sequence[str]) -> np.ndarray:
        """Stored embeddings of the passages with these ids (``(len(ids), d)`` float32 copy).

        Raises:
            InvalidInputError: an id is not in the index.

        Example:
            >>> r.embeddings_for(["0"]).shape  # doctest: +SKIP
            (1, 384)
        """
        if isinstance(ids, str):
            raise InvalidInputError(
                "embeddings_for() takes a list of ids; wrap a single id in a list"
            )
        self._check_indexed()
        ids = list(ids)
        rows = self._store.rows_of(ids)
        for pid, row in zip(ids, rows, strict=True):
            if row is None:
                raise InvalidInputError(f"no passage with id {pid!r} in this index ({len(self)} passages)")
        if rows and self._row_reader is not None:
            return self._row_reader.rows(rows)
        return (
            self.embeddings[np.asarray(rows, dtype=np.int64)].copy()
            if rows
            else np.zeros((0, self.embeddings.shape[1]), dtype=np.float32)
        )

    # -- indexing ----------------------------------------------------------------------
    def index(
        self, passages: Iterable[PassageLike], *, embeddings: np.ndarray | None = None
    ) -> DenseRetriever:
        """Embed and index ``passages`` (replacing any previous index); returns ``self``.

        Args:
            passages: the corpus.
            embeddings: optional precomputed ``(N, d)`` passage embeddings, one row per
                passage in order (normalised here); the encoder is then not called for
                the passages — it must still produce ``d``-dimensional query embeddings.

        Raises:
            InvalidInputError: empty corpus, duplicate ids, empty texts, or
                ``embeddings`` of the wrong shape.
        """
        ps = to_passages(passages) if passages is not None else None
        if not ps:
            raise InvalidInputError(
                "cannot index an empty corpus; pass at least one passage to DenseRetriever.index()"
            )
        if embeddings is None:
            emb = self._encode([p.text for p in ps])
        else:
            emb = self._given_embeddings(embeddings, len(ps), None)
        self._set_passages(ps)
        self._expected_dim = int(emb.shape[1])
        self.embeddings = emb
        self._row_reader = None
        self._build_index()
        logger.debug(
            "indexed %d passages (%d-d, %s %s)", len(ps), emb.shape[1], self.engine, self.index_type
        )
        return self

    def _given_embeddings(self, embeddings: Any, n: int, dim: int | None) -> np.ndarray:
        emb = np.asarray(embeddings)
        if (
            emb.ndim != 2
            or emb.shape[0] != n
            or emb.shape[1] < 1
            or (dim is not None and emb.shape[1] != dim)
        ):
            want = f"({n}, {dim})" if dim is not None else f"({n}, d)"
            raise InvalidInputError(
                f"embeddings must have shape {want}, one row per passage; got {emb.shape}"
            )
        if not np.issubdtype(emb.dtype, np.number) or emb.dtype == bool:
            raise InvalidInputError(f"embeddings must be real numbers, got dtype {emb.dtype}")
        check_embedding_rows(emb, "embeddings")
        if self._encoder is not None and self._encoder.dim != emb.shape[1]:
            raise InvalidInputError(
                f"embeddings are {emb.shape[1]}-d but the encoder produces {self._encoder.dim}-d query embeddings"
            )
        return _normalise(np.array(emb, dtype=np.float32))  # a copy: never normalise the caller's array in place

    def add(
        self, passages: Iterable[PassageLike], *, embeddings: np.ndarray | None = None
    ) -> DenseRetriever:
        """Append passages, encoding only the new ones; returns ``self``.

        Passages given without an id are numbered on from ``len(self)``. On an empty
        retriever this is :meth:`index`. IVF indexes keep their trained
        cells (retrain by calling :meth:`index` on the whole corpus when it has grown a lot).

        Args:
            passages: the passages to append.
            embeddings: optional precomputed ``(n, d)`` embeddings of the new passages.

        Raises:
            InvalidInputError: an id is already indexed, duplicate or empty input.
        """
        if not len(self):
            return self.index(passages, embeddings=embeddings)
        new = self._new_passages(passages)
        if embeddings is None:
            emb = self._encode([p.text for p in new])
        else:
            emb = self._given_embeddings(embeddings, len(new), int(self.embeddings.shape[1]))
        self._extend_passages(new)
        self.embeddings = np.ascontiguousarray(np.vstack([self.embeddings, emb]), dtype=np.float32)
        self._row_reader = None
        if self._faiss_index is not None:
            self._faiss_index.add(emb)
        return self

    def ann_spec(self, n: int | None = None) -> AnnSpec:
        """How the FAISS index is built and searched (``"auto"`` resolved for ``n``
        passages, default: the indexed count)."""
        used = self.index_type_used
        if used is None or n is not None:
            used = choose_index_type(len(self) if n is None else n) if self.index_type == "auto" else self.index_type
        return AnnSpec(
            used, nlist=self.nlist, nprobe=self.nprobe, hnsw_m=self.hnsw_m, ef_search=self.ef_search,
            ef_construction=self.ef_construction, pq_m=self.pq_m, opq=self.opq, rerank=self.rerank,
            train_size=self.train_size,
        )

    def _build_index(self) -> None:
        self._faiss_index = None
        spec = self.ann_spec(len(self.embeddings))
        self.index_type_used = spec.index_type if self.engine == "faiss" else "flat"
        if self.engine != "faiss":
            return
        if spec.index_type in ("ivf", "ivfpq"):
            from meteora.retrievers.ann import default_nlist

            self._nlist_used = default_nlist(len(self.embeddings), self.nlist)
        self._faiss_index = build_faiss(spec, self.embeddings)

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stored embeddings at these rows (by ``pread`` for a loaded index)."""
        if self._row_reader is not None:
            return self._row_reader.rows(rows)
        return np.asarray(self.embeddings[rows], dtype=np.float32)

    def _apply_search_params(self) -> None:
        apply_search_params(self.ann_spec(), self._faiss_index)

    # -- search ------------------------------------------------------------------------
    def _search_batch(self, queries: list[str], k: int) -> list[Ranking]:
        vectors = self._encode(queries)
        return self._rank_vectors(vectors, k, queries)

    def search_embeddings(
        self, vectors: np.ndarray, k: int = 10, queries: Sequence[str] | None = None
    ) -> list[Ranking]:
        """Search with query embeddings computed elsewhere (``(q, d)``; normalised here).

        Example:
            >>> r.search_embeddings(r.encode_queries(["fever"]), k=3)[0].ids  # doctest: +SKIP
            ['0', '1']
        """
        k = check_k(k)
        self._check_indexed()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embeddings.shape[1]:
            raise InvalidInputError(
                f"vectors must have shape (q, {self.embeddings.shape[1]}), got {vectors.shape}"
            )
        if queries is not None and len(queries) != len(vectors):
            raise InvalidInputError(f"got {len(queries)} queries for {len(vectors)} vectors")
        check_embedding_rows(vectors, "query vectors")
        return self._rank_vectors(_normalise(vectors), k, queries)

    def _rank_vectors(self, q: np.ndarray, k: int, queries: Sequence[str] | None) -> list[Ranking]:
        if self.engine == "faiss":
            self._apply_search_params()  # nprobe / ef_search may have been changed
            rows = ann_search(self.ann_spec(), self._faiss_index, self.embeddings, q, k, read_rows=self._read_rows)
        else:
            rows = exact_search(self.embeddings, q, k)
        found = iter(self._store.take([j for i, _ in rows for j in i.tolist()]))
        out = []
        for r, (_, s) in enumerate(rows):
            hits = [Hit(next(found), float(v), rank + 1) for rank, v in enumerate(s.tolist())]
            out.append(Ranking(hits, query=queries[r] if queries is not None else None))
        return out

    # -- persistence -------------------------------------------------------------------
    def _parameters(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SAVED_OPTIONS},
            "engine": self.engine,
            "nlist_used": self._nlist_used,
            "index_type_used": self.index_type_used,
            "metric": "inner_product",
            "normalized": True,
        }

    def _write_index(self, directory: Path) -> None:
        """Layout of a version folder: ``manifest.json`` (with the encoder name and
        dimension), ``passages.sqlite`` (:mod:`meteora.retrievers.passage_store`),
        ``embeddings.npy`` (float32, no pickle, memory-mapped on load) and, for HNSW/IVF/
        IVF-PQ, ``index.faiss`` (FAISS's own format). A flat index is rebuilt from the
        embeddings on load."""
        save_passages(directory, self._store)
        save_npy_blocks(directory / EMBEDDINGS_NAME, self.embeddings)
        if self._faiss_index is not None and self.index_type_used != "flat":
            import faiss

            faiss.write_index(self._faiss_index, str(directory / FAISS_NAME))
        self._write_manifest(directory, len(self), int(self.embeddings.shape[1]))

    def _write_manifest(self, directory: Path, count: int, dim: int) -> None:
        """The manifest of a version folder holding a dense index's files (also written
        by :mod:`meteora.retrievers.streaming`)."""
        write_manifest(
            directory,
            self.kind,
            counts={"passages": count, "dim": dim},
            parameters=self._parameters(),
            extra={"encoder": {"name": self.encoder_name, "dim": dim, "normalized": True}},
        )

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], encoder: Any = None, *, backend: str | None = None
    ) -> DenseRetriever:
        """Load an index written by :meth:`save`.

        Args:
            directory: the saved folder.
            encoder: the encoder for new queries (``None``: the one named in the
                manifest, loaded on first use).
            backend: override the saved backend.

        Raises:
            IndexFormatError: not a dense index, corrupt files, or an encoder whose
                dimension differs from the stored embeddings'.
        """
        return load_index(
            directory, lambda version: cls._read_index(version, encoder, backend=backend)
        )

    @classmethod
    def _read_index(
        cls, directory: Path, encoder: Any = None, *, backend: str | None = None
    ) -> DenseRetriever:
        manifest = read_manifest(directory, cls.kind, required=[EMBEDDINGS_NAME])
        saved = saved_dense(directory, manifest)
        options = dict(saved.options)
        if backend is not None:
            options["backend"] = backend
        try:
            self = cls(encoder=encoder if encoder is not None else saved.encoder_name, **options)
        except InvalidInputError as exc:
            raise IndexFormatError(
                f"{directory / MANIFEST_NAME} has invalid dense-index parameters ({exc}); "
                "rebuild the index and save it again"
            ) from exc
        self._expected_dim = saved.dim
        if self._encoder is not None:
            self._check_encoder_dim(self._encoder)
            if saved.encoder_name and saved.encoder_name != self.encoder_name:
                logger.warning(
                    "index %s was built with encoder %r; searching it with %r",
                    directory,
                    saved.encoder_name,
                    self.encoder_name,
                )
        self._store = open_passages(directory, manifest, saved.count)
        self.embeddings = load_embeddings(directory / EMBEDDINGS_NAME, saved.count, saved.dim)
        self._row_reader = NpyRowReader(directory / EMBEDDINGS_NAME)
        self._nlist_used = saved.nlist_used
        self.index_type_used = saved.index_type_used or (None if self.index_type == "auto" else self.index_type)
        if self.engine == "faiss" and self.ann_spec().index_type != "flat" and saved.has_faiss_file:
            self._faiss_index = read_faiss(directory / FAISS_NAME, saved.count, saved.dim)
            self._apply_search_params()
        else:
            self._build_index()
        return self

    def _repr_fields(self) -> str:
        return f"encoder={self.encoder_name!r}, index_type={self.index_type!r}, backend={self.engine!r}, dim={self.dim}"

