"""The sentence encoder, :class:`Encoder`: sentence-transformers behind one small
interface, with a passage cache (:mod:`meteora.embeddings.cache`).

A model given by name runs on torch (sentence-transformers) or on ONNX Runtime
(:mod:`meteora.inference`), which starts in a fraction of the time because it imports
neither torch nor transformers: ``runtime="auto"`` (the default, or
``$METEORA_RUNTIME``) takes ONNX for the packaged MiniLM on the CPU, exporting it once
into ``$METEORA_HOME/onnx/``; ``runtime="onnx"`` does so for any supported local
sentence-transformers folder, ``runtime="torch"`` never. Both runtimes share the cache
identity: their vectors agree within
:data:`~meteora.inference.export.ENCODER_TOLERANCE`, checked when the export is made.

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
from meteora.errors import (
    ExportError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
)
from meteora.inference.onnx_models import OnnxSentenceEncoder
from meteora.inference.runtime import onnx_export_available, onnx_runtime_available, resolve_runtime
from meteora.model_files import check_safetensors_only
from meteora.models import check_hub_model, default_embedding_path, resolve_embedding_model

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
            already-built ``SentenceTransformer`` (or any object with its ``encode``).
        device: torch device string (``"cpu"``, ``"cuda"``); ``None`` lets
            sentence-transformers decide (and allows ONNX).
        batch_size: texts per forward pass.
        max_length: truncate inputs to this many tokens (``None`` keeps the model's).
        normalize: L2-normalise the outputs.
        cache: embedding cache: ``True`` (default: in memory, :data:`DEFAULT_CACHE_ENTRIES`
            entries), a number of entries, a folder or ``.sqlite`` path (memory plus that
            file), a :class:`PassageEmbeddingCache` (may be shared by several encoders),
            or ``None``/``False``/``0`` (off). Models without a ``state_dict`` (stand-ins)
            are never cached (an ONNX export carries the fingerprint of the torch model
            it was made from, so it is).
        runtime: for a model given by name: ``"auto"`` (ONNX Runtime for the packaged
            MiniLM on the CPU, else torch), ``"onnx"`` (any supported local folder;
            exported on first use) or ``"torch"``; ``None`` reads ``$METEORA_RUNTIME``
            (default ``"auto"``). :attr:`runtime` says which one runs.

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
        runtime: str | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.normalize = normalize
        self.cache: PassageEmbeddingCache | None = _as_cache(cache)
        self._fingerprint: str | None | bool = False  # False: not computed yet
        self._fp_lock = threading.Lock()
        #: ``"onnx"`` or ``"torch"``: what computes the embeddings (``"torch"`` for a built model)
        self.runtime = "torch"
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self.model = model
            self.name = getattr(model, "name_or_path", None) or type(model).__name__
            self.runtime = "onnx" if isinstance(model, OnnxSentenceEncoder) else "torch"
        else:
            choice = resolve_runtime(runtime, device)
            path = resolve_embedding_model(model)
            check_safetensors_only(path, "embedding model")
            check_hub_model(path, "embedding model")
            self.name = str(model) if model not in (None, "default") else "sentence-transformers/all-MiniLM-L6-v2"
            onnx = self._onnx_model(path, forced=choice == "onnx") if choice != "torch" else None
            if onnx is not None:
                self.model, self.runtime = onnx, "onnx"
            else:
                self.model = _torch_model(path, device)
        if max_length is not None:
            self.model.max_seq_length = int(max_length)

    def _onnx_model(self, path: str, *, forced: bool) -> Any:
        """The ONNX export of the model in ``path`` (made now when missing), or ``None``
        to run it on torch. ``forced`` (``runtime="onnx"``) turns every ``None`` into an error."""
        from meteora.inference.store import export_folder, publish_export, read_export, source_key

        default = default_embedding_path()
        is_default = default is not None and os.path.realpath(path) == os.path.realpath(default)
        if not os.path.isdir(path):
            if forced:
                raise ModelNotFoundError(
                    f"runtime='onnx' exports a local model folder; {path!r} is not one: download it "
                    f"(`hf download {path} --local-dir DIR`) and pass DIR, or use runtime='torch'"
                )
            return None
        if not (forced or is_default):
            return None  # auto: only meteora's default model is exported unasked
        if not onnx_runtime_available():
            if forced:
                raise MissingDependencyError(
                    "runtime='onnx' needs onnxruntime and tokenizers: pip install onnxruntime tokenizers "
                    "(both come with meteora-rerank), or use runtime='torch'"
                )
            logger.debug("onnxruntime is not installed: %s runs on torch", self.name)
            return None
        key = source_key("sentence-encoder", [path])
        folder = export_folder("sentence-encoder", key)
        info = read_export(folder, "sentence-encoder", key)
        if info is None:
            if not onnx_export_available():
                if forced:
                    raise MissingDependencyError(
                        "exporting to ONNX needs torch, onnx and onnxscript (dependencies of meteora-rerank): "
                        "pip install onnx onnxscript, or use runtime='torch'"
                    )
                return None
            from meteora.inference.export import export_sentence_encoder

            logger.info("exporting %s to ONNX once, into %s (about a minute)", self.name, folder)
            try:
                folder, info = publish_export(
                    "sentence-encoder", key,
                    lambda tmp: export_sentence_encoder(_torch_model(path, "cpu"), tmp, source=self.name),
                )
            except ExportError as exc:
                if forced:
                    raise
                logger.warning("%s; running %s on torch", exc, self.name)
                return None
        return OnnxSentenceEncoder(folder, info)

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
                # an ONNX export carries the fingerprint of the torch model it was made from
                self._fingerprint = getattr(self.model, "source_fingerprint", None) or model_fingerprint(self.model)
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
        return f"Encoder(name={self.name!r}, normalize={self.normalize}, runtime={self.runtime!r})"


def _torch_model(path: str, device: str | None) -> Any:
    """The sentence-transformers model in ``path`` (a folder or hub id)."""
    from sentence_transformers import SentenceTransformer

    try:
        with quiet_model_loading():
            return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise ModelNotFoundError(
            f"could not load embedding model {path!r}: {exc}. Pass a local folder, a reachable hub id, "
            "or run `meteora models pull` for the offline default"
        ) from exc


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)

