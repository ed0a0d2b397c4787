"""Sentence embeddings behind one small interface, :class:`Encoder`.

Wraps ``sentence-transformers``. Loads by hub id or local folder; ``None`` or
``"default"`` loads the packaged all-MiniLM-L6-v2 (see :mod:`meteora.models`). Outputs
are float32 numpy arrays, L2-normalised by default so that a dot product is a cosine.

Example:
    >>> enc = Encoder()  # doctest: +SKIP
    >>> enc.encode(["fever", "pyrexia"]).shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from meteora.errors import InvalidInputError, ModelNotFoundError
from meteora.models import resolve_embedding_model
from meteora.settings import apply_thread_setting

__all__ = ["Encoder"]

logger = logging.getLogger(__name__)


class Encoder:
    """A sentence encoder producing float32 (optionally L2-normalised) embeddings.

    Args:
        model: hub id, local folder, ``None``/``"default"`` for the packaged MiniLM, or an
            already-built ``SentenceTransformer``.
        device: torch device string (``"cpu"``, ``"cuda"``); ``None`` lets
            sentence-transformers decide.
        batch_size: texts per forward pass.
        max_length: truncate inputs to this many tokens (``None`` keeps the model's).
        num_threads: torch threads (``None``: ``$METEORA_NUM_THREADS`` or torch's default).
        normalize: L2-normalise the outputs.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        num_threads: int | None = None,
        normalize: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        apply_thread_setting(num_threads)
        self.batch_size = batch_size
        self.normalize = normalize
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self.model = model
            self.name = getattr(model, "name_or_path", None) or type(model).__name__
        else:
            from sentence_transformers import SentenceTransformer

            path = resolve_embedding_model(model)
            self.name = str(model) if model not in (None, "default") else "sentence-transformers/all-MiniLM-L6-v2"
            try:
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

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None, batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts``; returns a ``(len(texts), dim)`` float32 array.

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
        bs = batch_size or self.batch_size
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(texts) > bs
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
