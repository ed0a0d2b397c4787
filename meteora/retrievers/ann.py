"""The FAISS index of a dense retriever: which kind, how it is built, how it is searched.

Index types (``DenseRetriever(index_type=...)``):

* ``"flat"``: exact inner-product search (FAISS's ``knn`` straight over the stored
  embeddings — a memory map once loaded — so nothing is copied or built).
* ``"hnsw"``: graph search (``IndexHNSWFlat``): fast and accurate, but it holds every
  vector plus the graph in memory.
* ``"ivf"``: inverted lists of full vectors (``IVF<nlist>,Flat``).
* ``"ivfpq"``: inverted lists of product-quantised codes (``IVF<nlist>,PQ<m>x<bits>``,
  with ``opq=True`` an OPQ rotation first): ``m`` bytes per vector (48 for 384-d MiniLM
  vectors by default, 32× less than float32). The ``rerank`` best candidates by
  compressed distance are re-scored by exact inner product on the stored embeddings (a
  memory-mapped file once loaded), so the returned scores are exact cosines and the
  order is exact among the candidates.
* ``"auto"``: ``"flat"`` up to :data:`FLAT_MAX` passages, ``"ivfpq"`` above (measured
  in ``benchmarks/results/scale.json``: exact search stops being fast enough, and
  ``"hnsw"`` needs all vectors in memory).

Trained indexes (IVF, IVF-PQ, OPQ) are trained on a seeded sample of rows
(:func:`train_rows`) read from the embeddings, then the vectors are added in blocks, so a
memory-mapped embedding file is never read whole into memory.

Example:
    >>> import numpy as np
    >>> x = np.eye(4, dtype=np.float32)
    >>> spec = AnnSpec("flat")
    >>> index = build_faiss(spec, x)  # doctest: +SKIP
    >>> search(spec, index, x, x[:1], 2)[1].tolist()  # doctest: +SKIP
    [[0, 1]]
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, require
from meteora.retrievers.base import importable, topk_indices

__all__ = [
    "BACKENDS",
    "INDEX_TYPES",
    "default_nprobe",
    "FLAT_MAX",
    "AnnSpec",
    "choose_index_type",
    "default_nlist",
    "train_rows",
    "build_faiss",
    "search",
    "resolve_engine",
    "exact_search",
]

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivfpq", "auto")
#: ``DenseRetriever(backend=...)``: FAISS, exact numpy search, or FAISS when importable
BACKENDS = ("auto", "faiss", "numpy")
#: most score-matrix cells (queries × passages) :func:`exact_search` holds at once
NUMPY_BLOCK = 1 << 25
#: ``index_type="auto"`` searches exactly up to this many passages, with IVF-PQ above
FLAT_MAX = 100_000
#: vectors added to a FAISS index per call (bounds the float32 copy of a memory map)
ADD_BLOCK = 65_536
#: training sample: this many vectors per IVF cell, at least :data:`MIN_TRAIN`
TRAIN_PER_LIST = 50
MIN_TRAIN = 20_000
#: ``nprobe=None`` visits 1/:data:`PROBE_FRACTION` of the IVF cells, at least
#: :data:`MIN_NPROBE` (chosen on the PubMedQA train-side questions in
#: ``benchmarks/results/scale.json``: recall@10 >= 0.95 against exact search)
PROBE_FRACTION = 16
MIN_NPROBE = 16


def choose_index_type(n: int) -> str:
    """The index type ``"auto"`` picks for ``n`` passages.

    Example:
        >>> choose_index_type(50_000), choose_index_type(2_000_000)
        ('flat', 'ivfpq')
    """
    return "flat" if n <= FLAT_MAX else "ivfpq"


def default_nlist(n: int, nlist: int | None = None) -> int:
    """IVF cells for ``n`` vectors: ``nlist`` clipped to ``n``, or ``4·sqrt(n)`` (at most
    ``n / 39``, FAISS's minimum of training points per cell).

    Example:
        >>> default_nlist(1_000_000), default_nlist(100, 500)
        (4000, 100)
    """
    if nlist is not None:
        if nlist > n:
            logger.warning("nlist=%d exceeds the %d passages; using nlist=%d", nlist, n, n)
        return max(1, min(nlist, n))
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def default_nprobe(nlist: int) -> int:
    """IVF cells a query visits when ``nprobe`` is not given: 1/16 of them, at least 16.

    Example:
        >>> default_nprobe(4000), default_nprobe(100)
        (250, 16)
    """
    return min(nlist, max(MIN_NPROBE, -(-nlist // PROBE_FRACTION)))


@dataclass(frozen=True)
class AnnSpec:
    """Everything that decides how a FAISS index is built and searched.

    Attributes:
        index_type: ``"flat"``, ``"hnsw"``, ``"ivf"`` or ``"ivfpq"`` (resolved, not ``"auto"``).
        nlist: IVF cells (``None``: :func:`default_nlist`).
        nprobe: IVF cells visited per query (``None``: :func:`default_nprobe`).
        hnsw_m, ef_search, ef_construction: HNSW graph degree and search/build breadth.
        pq_m: PQ sub-quantisers, bytes per vector at 8 bits (``None``: ``d / 8``).
        pq_bits: bits per sub-quantiser code.
        opq: rotate the vectors with OPQ before PQ.
        rerank: IVF-PQ candidates re-scored exactly (at least ``k``).
        train_size: training sample size (``None``: 50 per cell, at least 20,000).
        seed: seed of the training sample.
    """

    index_type: str
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 200
    pq_m: int | None = None
    pq_bits: int = 8
    opq: bool = False
    rerank: int = 200
    train_size: int | None = None
    seed: int = 0

    def factory(self, d: int, n: int) -> str:
        """The FAISS ``index_factory`` string for ``n`` vectors of dimension ``d``.

        Example:
            >>> AnnSpec("ivfpq", opq=True).factory(384, 1_000_000)
            'OPQ48,IVF4000,PQ48x8'
        """
        if self.index_type == "flat":
            return "Flat"
        if self.index_type == "hnsw":
            return f"HNSW{self.hnsw_m}"
        nlist = default_nlist(n, self.nlist)
        if self.index_type == "ivf":
            return f"IVF{nlist},Flat"
        m = self.pq_m_for(d)
        return f"{f'OPQ{m},' if self.opq else ''}IVF{nlist},PQ{m}x{self.pq_bits_for(n)}"

    def pq_m_for(self, d: int) -> int:
        """Sub-quantisers for dimension ``d``.

        Raises:
            InvalidInputError: ``pq_m`` does not divide ``d``.
        """
        m = self.pq_m if self.pq_m is not None else max(1, d // 8)
        if d % m:
            raise InvalidInputError(f"pq_m={m} must divide the embedding dimension {d}; choose a divisor of {d}")
        return m

    def pq_bits_for(self, n: int) -> int:
        """Bits per PQ code: ``pq_bits``, fewer when the corpus is too small to train
        ``2**pq_bits`` centroids per sub-quantiser (FAISS wants 39 points per centroid)."""
        return max(1, min(self.pq_bits, int(math.log2(max(2, n // 39)))))

    def train_size_for(self, n: int, d: int) -> int:
        """Vectors sampled to train on (all of them for small corpora)."""
        if self.index_type not in ("ivf", "ivfpq"):
            return 0
        want = self.train_size or max(MIN_TRAIN, TRAIN_PER_LIST * default_nlist(n, self.nlist))
        return min(n, want)


def train_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` distinct rows of ``0..n-1`` drawn with ``seed``, sorted (all rows when
    ``size >= n``): the same sample for the same corpus size, on any machine.

    Example:
        >>> train_rows(10, 3).tolist()
        [5, 6, 9]
    """
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _faiss() -> Any:
    import faiss

    return faiss


def empty_faiss(spec: AnnSpec, d: int, n: int, embeddings: Any) -> Any:
    """A FAISS index for ``spec``, trained on a sample of ``embeddings`` when it needs it
    (``embeddings``: ``(n, d)`` array or memory map; only the sampled rows are read)."""
    faiss = _faiss()
    index = faiss.index_factory(d, spec.factory(d, n), faiss.METRIC_INNER_PRODUCT)
    if spec.index_type == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
    if not index.is_trained:
        rows = train_rows(n, spec.train_size_for(n, d), spec.seed)
        sample = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
        logger.info("training %s on %d of %d vectors", spec.factory(d, n), len(sample), n)
        _seed_clustering(index, spec.seed)
        _no_polysemous_training(index)
        index.train(sample)
    return index


def _seed_clustering(index: Any, seed: int) -> None:
    """Fix the k-means seeds of the coarse quantiser and the product quantiser."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            pq.cp.seed = seed


def _no_polysemous_training(index: Any) -> None:
    """FAISS trains polysemous codes for IVF-PQ by default (slow annealing); meteora
    re-ranks candidates exactly instead, so it is switched off."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        faiss.downcast_index(ivf).do_polysemous_training = False


def add_blocks(index: Any, embeddings: Any, start: int = 0, stop: int | None = None) -> None:
    """Add rows ``start..stop`` of ``embeddings`` (array or memory map) in blocks; their
    FAISS ids are their row numbers."""
    stop = len(embeddings) if stop is None else stop
    for a in range(start, stop, ADD_BLOCK):
        b = min(a + ADD_BLOCK, stop)
        block = np.ascontiguousarray(embeddings[a:b], dtype=np.float32)
        if index.ntotal != a:
            raise RuntimeError(f"adding rows {a}..{b} to an index holding {index.ntotal} vectors")
        index.add(block)


def build_faiss(spec: AnnSpec, embeddings: Any) -> Any:
    """Build and fill the FAISS index of ``spec`` over ``(n, d)`` ``embeddings``
    (``None`` for ``"flat"``: exact search reads the embeddings themselves)."""
    if spec.index_type == "flat":
        return None
    n, d = embeddings.shape
    index = empty_faiss(spec, d, n, embeddings)
    add_blocks(index, embeddings)
    apply_search_params(spec, index)
    return index


def apply_search_params(spec: AnnSpec, index: Any) -> None:
    """Set ``nprobe`` / ``efSearch`` on a built or loaded index."""
    if index is None:
        return
    if spec.index_type == "hnsw":
        _faiss().downcast_index(index).hnsw.efSearch = spec.ef_search
    elif spec.index_type in ("ivf", "ivfpq"):
        ivf = _faiss().extract_index_ivf(index)
        ivf.nprobe = spec.nprobe if spec.nprobe is not None else default_nprobe(ivf.nlist)


def search(
    spec: AnnSpec, index: Any, embeddings: Any, queries: np.ndarray, k: int, *, read_rows: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-``k`` rows and scores of each query, best first, ties by row.

    ``"flat"`` is exact (``faiss.knn`` over ``embeddings``, ``index`` unused; a tie
    across the cut-off is resolved over the whole corpus);
    ``"ivfpq"`` re-scores its ``max(rerank, k)`` candidates exactly on ``embeddings``;
    ``"hnsw"`` and ``"ivf"`` return FAISS's scores (exact inner products of the
    candidates they visit). ``read_rows(rows)`` fetches stored embeddings for re-ranking
    (default: ``embeddings[rows]``).
    """
    read_rows = read_rows or (lambda rows: np.asarray(embeddings[rows], dtype=np.float32))
    n = len(embeddings)
    exact = spec.index_type == "flat"
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if spec.index_type == "ivfpq":
        kk = min(max(spec.rerank, k), n)
    else:
        kk = min(k + 1, n) if exact else min(k, n)
    if exact:
        faiss = _faiss()
        scores, idx = faiss.knn(queries, embeddings, kk, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        scores, idx = index.search(queries, kk)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(len(queries)):
        s, i = scores[r], idx[r]
        if exact and kk > k and s[k - 1] == s[k]:  # a tie across the cut-off
            full = np.asarray(embeddings @ queries[r])
            top = topk_indices(full, k)
            rows.append((top, full[top]))
            continue
        keep = i >= 0
        i = i[keep]
        if spec.index_type == "ivfpq":
            cand = np.sort(i)  # read the memory map in file order
            exact_scores = read_rows(cand) @ queries[r]
            top = topk_indices(exact_scores, k)
            rows.append((cand[top], exact_scores[top]))
            continue
        s, i = s[keep][:k], i[:k]
        order = np.lexsort((i, -s))
        rows.append((i[order], s[order]))
    return rows


def resolve_engine(backend: str, index_type: str) -> str:
    """The engine a dense index runs on: ``"faiss"`` or ``"numpy"`` (exact; flat only).

    Raises:
        InvalidInputError: ``backend="numpy"`` with an approximate index type.
        MissingDependencyError: ``backend="faiss"`` without FAISS installed.

    Example:
        >>> resolve_engine("numpy", "auto")
        'numpy'
    """
    if backend == "faiss":
        require("faiss", "faiss", "the FAISS dense-index backend")
        return "faiss"
    if backend == "numpy":
        if index_type not in ("flat", "auto"):
            raise InvalidInputError(
                f"index_type {index_type!r} needs FAISS; use backend='faiss' (or 'auto') or index_type='flat'"
            )
        return "numpy"
    if importable("faiss"):
        return "faiss"
    if index_type not in ("flat", "auto"):
        logger.warning("faiss is not installed: %s index replaced by exact numpy search", index_type)
    return "numpy"


def exact_search(embeddings: Any, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top-``k`` rows and scores of each query by a numpy matrix product, a block
    of queries at a time (at most :data:`NUMPY_BLOCK` scores held), ties by row.

    Example:
        >>> x = np.eye(3, dtype=np.float32)
        >>> [r.tolist() for r, _ in exact_search(x, x[1:2], 2)]
        [[1, 0]]
    """
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    block = max(1, NUMPY_BLOCK // max(len(embeddings), 1))
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ embeddings.T
        top = topk_indices(sims, k)
        vals = np.take_along_axis(sims, top, axis=1)
        rows.extend(zip(top, vals, strict=True))
    return rows
