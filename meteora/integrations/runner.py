"""The reranker behind a framework integration: built lazily, called under a lock, fed
the documents' stored embeddings when they fit.

:class:`RerankerHandle` is what :mod:`meteora.integrations.langchain` and
:mod:`meteora.integrations.llamaindex` share: it holds a built
:class:`~meteora.reranker.Reranker` (any generator backend, any encoder) or builds the
offline default ``Reranker(**kwargs)`` on first use, serialises calls (one reranker's
models are not shared between threads at once; the async variants run in a thread
pool), and passes stored passage embeddings to :meth:`Reranker.rerank
<meteora.reranker.Reranker.rerank>` when *every* candidate has one of the encoder's
dimension, so nothing is encoded twice. Stored vectors must come from the reranker's
own encoder (e.g. index with ``reranker.encoder``); a dimension that differs is
ignored with a log line and the texts are encoded.

Example:
    >>> handle = RerankerHandle(None, {"generator": None})   # built on first rerank()
    >>> handle.built
    False
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from meteora._checks import check_text
from meteora.errors import InvalidInputError
from meteora.selection_inputs import MAX_EMBED_CHARS
from meteora.types import Passage, check_query

__all__ = ["RerankerHandle", "as_position", "check_reranker_kwargs", "encoder_of", "encode_texts"]

logger = logging.getLogger(__name__)

_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_for(reranker: Any) -> threading.Lock:
    """One lock per reranker object, shared by every integration that wraps it: the
    reranker's own ``lock`` (which its async methods hold too), else one kept here."""
    own = getattr(reranker, "lock", None)
    if own is not None and hasattr(own, "acquire"):
        return own
    with _LOCKS_GUARD:
        lock = _LOCKS.get(reranker)
        if lock is None:
            lock = _LOCKS[reranker] = threading.Lock()
        return lock


def check_reranker_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for a lazily built ``Reranker``, checked against its signature
    now (a typo fails when the integration is built, not at its first query).

    Example:
        >>> check_reranker_kwargs({"generator": None, "top_k": 3})
        {'generator': None, 'top_k': 3}
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidInputError(f"reranker_kwargs must be a dict of Reranker arguments, got {type(kwargs).__name__}")
    from meteora.reranker import Reranker

    params = inspect.signature(Reranker).parameters
    unknown = sorted(str(k) for k in kwargs if k not in params)
    if unknown:
        raise InvalidInputError(
            f"unknown reranker_kwargs {unknown}; meteora.Reranker takes {sorted(params)} "
            "(or pass a built reranker=Reranker(...))"
        )
    return dict(kwargs)


def encoder_of(obj: Any) -> Any:
    """The encoder behind a framework's embeddings adapter: a
    :class:`~meteora.reranker.Reranker`'s or a dense retriever's (``.encoder``), an
    :class:`~meteora.embeddings.encoder.Encoder`, or one loaded from a model name or
    folder (``None``: the packaged all-MiniLM-L6-v2)."""
    from meteora.embeddings.encoder import Encoder

    if isinstance(obj, Encoder):
        return obj
    inner = getattr(obj, "encoder", None)
    if isinstance(inner, Encoder):
        return inner
    if obj is None or isinstance(obj, (str, os.PathLike)):
        return Encoder(obj)
    raise InvalidInputError(
        "encoder must be a meteora Reranker (its encoder), an Encoder, a model name or folder, or None (the default "
        f"MiniLM); got {type(obj).__name__}"
    )


def encode_texts(encoder: Any, texts: Any, name: str) -> np.ndarray:
    """``(len(texts), d)`` float32 vectors of ``texts`` from ``encoder``, each text checked
    and cut to :data:`~meteora.selection_inputs.MAX_EMBED_CHARS` exactly as the reranker
    cuts a passage, so the encoder's cache serves the reranker the same vectors."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"{name} must be a list of str, got {type(texts).__name__}")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"{name}[{i}] must be a str, got {type(text).__name__}")
        check_text(text, f"{name}[{i}]")
        out.append(text if len(text) <= MAX_EMBED_CHARS else text[:MAX_EMBED_CHARS])
    return np.asarray(encoder.encode(out), dtype=np.float32)


def as_position(value: Any) -> int:
    """A passage position from document metadata: a non-negative int, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, np.integer)) and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


class RerankerHandle:
    """A :class:`~meteora.reranker.Reranker`, given or built lazily, called under a lock.

    Args:
        reranker: a built reranker (anything with ``rerank(query, passages,
            passage_embeddings=...)`` and an ``encoder``), or ``None`` to build
            ``Reranker(**build_kwargs)`` on first use.
        build_kwargs: keyword arguments of the lazily built ``Reranker``.
    """

    def __init__(self, reranker: Any = None, build_kwargs: Mapping[str, Any] | None = None) -> None:
        if reranker is not None and not hasattr(reranker, "rerank"):
            raise InvalidInputError(
                f"reranker must be a meteora.Reranker (or None for the default), got {type(reranker).__name__}"
            )
        if reranker is not None and build_kwargs:
            raise InvalidInputError("pass either a built reranker or reranker_kwargs, not both")
        self._reranker = reranker
        self._kwargs = check_reranker_kwargs(build_kwargs)
        self._build_lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the reranker exists yet."""
        return self._reranker is not None

    def get(self) -> Any:
        """The reranker, built now if needed (``Reranker(**build_kwargs)``)."""
        if self._reranker is None:
            with self._build_lock:
                if self._reranker is None:
                    from meteora.reranker import Reranker

                    logger.info("building the reranker: Reranker(%s)", ", ".join(f"{k}=..." for k in self._kwargs))
                    self._reranker = Reranker(**self._kwargs)
        return self._reranker

    def usable_embeddings(self, vectors: Sequence[Any]) -> np.ndarray | None:
        """Stack ``vectors`` (one per candidate, ``None`` where missing) when every one
        is present and of the encoder's dimension; else ``None`` (encode the texts)."""
        if not vectors or any(v is None for v in vectors):
            return None
        try:
            emb = np.asarray([np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors], dtype=np.float32)
        except (TypeError, ValueError):
            logger.info("stored embeddings are not numeric vectors of one length; encoding the texts instead")
            return None
        encoder = getattr(self.get(), "encoder", None)
        dim = getattr(encoder, "dim", None)
        if emb.ndim != 2 or (dim is not None and emb.shape[1] != dim):
            logger.info(
                "stored embeddings have dimension %s, the reranker's encoder %s; encoding the texts instead",
                emb.shape[-1] if emb.ndim else "?", dim,
            )
            return None
        return emb

    def rerank(self, query: str, passages: Sequence[Passage], vectors: Sequence[Any] | None = None) -> Any:
        """``reranker.rerank(query, passages)``, with stored embeddings when usable."""
        check_query(query)
        reranker = self.get()
        emb = self.usable_embeddings(vectors) if vectors is not None else None
        with _lock_for(reranker):
            return reranker.rerank(query, list(passages), passage_embeddings=emb)

    def __repr__(self) -> str:
        return f"RerankerHandle({self._reranker!r})" if self.built else "RerankerHandle(<built on first use>)"
