"""The sentence encoder, :class:`Encoder`: sentence-transformers behind one small
interface, with a passage cache (:mod:`meteora.embeddings.cache`).

Example:
    >>> enc = Encoder(cache=True)  # doctest: +SKIP
    >>> enc.encode(["fever", "pyrexia"]).shape  # doctest: +SKIP
    (2, 384)
    >>> enc.encode(["fever"]); enc.cache.stats()["hits"]  # doctest: +SKIP
    1
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora.console import progress_enabled, quiet_model_loading
from meteora.embeddings.cache import DEFAULT_CACHE_ENTRIES, PassageEmbeddingCache, text_key
from meteora.embeddings.fingerprint import model_fingerprint
from meteora.errors import InvalidInputError, ModelNotFoundError
from meteora.models import check_hub_model, resolve_embedding_model

__all__ = ["Encoder"]

logger = logging.getLogger(__name__)


def _as_cache(cache: Any) -> PassageEmbeddingCache | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        return PassageEmbeddingCache(DEFAULT_CACHE_ENTRIES)
    if isinstance(cache, PassageEmbeddingCache):
        return cache
    if isinstance(cache, int):
        if cache < 0:
            raise InvalidInputError(f"cache must be a non-negative number of entries, got {cache}")
        return PassageEmbeddingCache(cache) if cache > 0 else None
    if isinstance(cache, (str, os.PathLike)):
        return PassageEmbeddingCache(DEFAULT_CACHE_ENTRIES, path=cache)
    raise InvalidInputError(
        "cache must be None/False (off), True (an in-memory cache of "
        f"{DEFAULT_CACHE_ENTRIES} entries), a number of entries, a folder/.sqlite path, or a "
        f"PassageEmbeddingCache; got {type(cache).__name__}"
    )


class Encoder:
    """A sentence encoder producing float32 (optionally L2-normalised) embeddings.

    Args:
        model: hub id, local folder, ``None``/``"default"`` for the packaged MiniLM, or an
            already-built ``SentenceTransformer``.
        device: torch device string (``"cpu"``, ``"cuda"``); ``None`` lets
            sentence-transformers decide.
        batch_size: texts per forward pass.
        max_length: truncate inputs to this many tokens (``None`` keeps the model's).
        normalize: L2-normalise the outputs.
        cache: embedding cache: ``True`` (default: in memory, :data:`DEFAULT_CACHE_ENTRIES`
            entries), a number of entries, a folder or ``.sqlite`` path (memory plus that
            file), a :class:`PassageEmbeddingCache` (may be shared by several encoders),
            or ``None``/``False``/``0`` (off). Models without a ``state_dict`` (stand-ins)
            are never cached.

    Example:
        >>> enc = Encoder(cache=PassageEmbeddingCache(50_000, path="~/.cache/meteora/emb"))  # doctest: +SKIP
        >>> enc.encode(["a passage"]); enc.cache.stats()["misses"]  # doctest: +SKIP
        1
    """

    def __init__(
        self,
        model: Any = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        normalize: bool = True,
        cache: Any = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.normalize = normalize
        self.cache: PassageEmbeddingCache | None = _as_cache(cache)
        self._fingerprint: str | None | bool = False  # False: not computed yet
        self._fp_lock = threading.Lock()
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self.model = model
            self.name = getattr(model, "name_or_path", None) or type(model).__name__
        else:
            from sentence_transformers import SentenceTransformer

            path = resolve_embedding_model(model)
            check_hub_model(path, "embedding model")
            self.name = str(model) if model not in (None, "default") else "sentence-transformers/all-MiniLM-L6-v2"
            try:
                with quiet_model_loading():
                    self.model = SentenceTransformer(path, device=device)
            except OSError as exc:
                raise ModelNotFoundError(
                    f"could not load embedding model {path!r}: {exc}. Pass a local folder, a reachable hub id, "
                    "or run `meteora models pull` for the offline default"
                ) from exc
        if max_length is not None:
            self.model.max_seq_length = int(max_length)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def identity(self) -> str | None:
        """What the cache keys vectors by: a digest of the model's
        :func:`model_fingerprint` (weights, tokenizer, module configuration),
        ``normalize``, ``max_seq_length`` and the sentence-transformers output options;
        ``None`` when the model cannot be fingerprinted (then nothing is cached).

        The name or folder the model was loaded from is deliberately not part of it: the
        same model loaded by hub id, from a copied folder or passed as an object shares
        entries, while two models under the same name but with other weights do not.

        The weight fingerprint is computed once; after changing the weights in place
        (fine-tuning this very object), call :meth:`reset_identity`.
        """
        with self._fp_lock:
            if self._fingerprint is False:
                t0 = time.perf_counter()
                self._fingerprint = model_fingerprint(self.model)
                logger.debug("fingerprinted %s in %.3f s", self.name, time.perf_counter() - t0)
            fingerprint = self._fingerprint
        if fingerprint is None:
            return None
        fields = {
            "v": 1,
            "weights": fingerprint,
            "normalize": bool(self.normalize),
            "max_seq_length": _jsonable(getattr(self.model, "max_seq_length", None)),
            "truncate_dim": _jsonable(getattr(self.model, "truncate_dim", None)),
            "default_prompt_name": _jsonable(getattr(self.model, "default_prompt_name", None)),
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def reset_identity(self) -> None:
        """Recompute the weight fingerprint on the next call (after in-place weight changes)."""
        with self._fp_lock:
            self._fingerprint = False

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None, batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts``; returns a ``(len(texts), dim)`` float32 array.

        With a cache, texts stored before are read from it and only the others are
        encoded (in one call, each distinct text once); the order of ``texts`` is kept.
        ``show_progress=None`` shows a bar only when the logger is at INFO or lower and
        there is more than one batch.
        """
        if isinstance(texts, str):
            raise InvalidInputError("encode() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"texts[{i}] has type {type(t).__name__}; expected str")
        ident = self.identity if self.cache is not None else None
        if ident is None:
            return self._encode_raw(texts, show_progress=show_progress, batch_size=batch_size)
        assert self.cache is not None
        keys = [text_key(t) for t in texts]
        found = self.cache.get_many(ident, keys)
        todo: dict[bytes, str] = {}
        for key, text, vec in zip(keys, texts, found, strict=True):
            if vec is None and key not in todo:
                todo[key] = text
        fresh: dict[bytes, np.ndarray] = {}
        if todo:
            emb = self._encode_raw(list(todo.values()), show_progress=show_progress, batch_size=batch_size)
            self.cache.put_many(ident, list(todo), emb)
            fresh = dict(zip(todo, emb, strict=True))
        first = next(v for v in (*fresh.values(), *(f for f in found if f is not None)))
        out = np.empty((len(texts), first.shape[-1]), dtype=np.float32)
        for i, (key, vec) in enumerate(zip(keys, found, strict=True)):
            out[i] = vec if vec is not None else fresh[key]
        return out

    def _encode_raw(self, texts: list[str], *, show_progress: bool | None, batch_size: int | None) -> np.ndarray:
        bs = batch_size or self.batch_size
        if show_progress is None:
            show_progress = progress_enabled() and len(texts) > bs
        emb = self.model.encode(
            texts,
            batch_size=bs,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Encoder(name={self.name!r}, normalize={self.normalize})"


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)

