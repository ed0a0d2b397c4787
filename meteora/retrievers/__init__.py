"""Retrievers behind one interface: BM25 (bm25s), dense (FAISS) and hybrid fusion.

Every retriever has ``index(passages)``, ``search(query_or_queries, k)``,
``save(dir)`` / ``load(dir)``; :func:`load_retriever` loads any saved index.

Example:
    >>> from meteora.retrievers import BM25Retriever
    >>> r = BM25Retriever(backend="numpy").index(["Aspirin reduces fever.", "Statins lower LDL."])
    >>> r.search("aspirin", k=5).ids
    ['0']
"""

from __future__ import annotations

from meteora.retrievers.base import Retriever, load_retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.hybrid import HybridRetriever, rrf_fuse, weighted_fuse

__all__ = [
    "Retriever",
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "rrf_fuse",
    "weighted_fuse",
    "load_retriever",
]
