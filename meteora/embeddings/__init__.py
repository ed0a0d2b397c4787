"""Sentence embeddings behind one small interface, :class:`Encoder`, with a passage cache.

Wraps ``sentence-transformers``. Loads by hub id or local folder; ``None`` or
``"default"`` loads the packaged all-MiniLM-L6-v2 (see :mod:`meteora.models`). Outputs
are float32 numpy arrays, L2-normalised by default so that a dot product is a cosine.

In a RAG pipeline the same passages come back query after query, and encoding them is
the slow part of :meth:`meteora.Reranker.rerank` on a CPU. Every :class:`Encoder`
therefore keeps a bounded in-memory :class:`PassageEmbeddingCache` by default
(``DEFAULT_CACHE_ENTRIES`` entries, 1.8 KB each for a 384-d model, measured): a text seen
before is not encoded again, and a batch mixing seen and new texts encodes only the new
ones, in one call, in order. Entries are keyed by the encoder's :attr:`Encoder.identity`
(a fingerprint of the model: weights, tokenizer and module configuration; plus
``normalize``, ``max_seq_length``) and the sha256 of the text, so a changed model never
reads another model's vectors. A cache built with ``path=`` also persists to an SQLite
file (raw float32 blobs, never pickle), shared between processes and runs.

Example:
    >>> enc = Encoder()  # doctest: +SKIP
    >>> enc.encode(["fever", "pyrexia"]).shape  # doctest: +SKIP
    (2, 384)
    >>> enc.encode(["fever", "a new passage"]).shape  # only the new passage is encoded  # doctest: +SKIP
    (2, 384)
    >>> enc.cache.stats()["hits"]  # doctest: +SKIP
    1

The parts: :mod:`meteora.embeddings.encoder` (:class:`Encoder`),
:mod:`meteora.embeddings.cache` (:class:`PassageEmbeddingCache`, :func:`text_key`) and
:mod:`meteora.embeddings.fingerprint` (:func:`model_fingerprint`); the classes and
:func:`model_fingerprint` are importable from here.
"""

from __future__ import annotations

from meteora.embeddings.cache import EmbeddingCacheError, PassageEmbeddingCache
from meteora.embeddings.encoder import Encoder
from meteora.embeddings.fingerprint import model_fingerprint

__all__ = [
    "Encoder",
    "PassageEmbeddingCache",
    "EmbeddingCacheError",
    "model_fingerprint",
]
