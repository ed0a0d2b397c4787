"""A fingerprint of a model's weights, tokenizer and modules (:func:`model_fingerprint`).

:class:`~meteora.embeddings.Encoder` keys its cached vectors by it, so a changed model
never reads another model's vectors.

Example:
    >>> model_fingerprint(object()) is None  # a stand-in without a state_dict
    True
    >>> from sentence_transformers import SentenceTransformer  # doctest: +SKIP
    >>> len(model_fingerprint(SentenceTransformer("all-MiniLM-L6-v2")))  # doctest: +SKIP
    64
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

__all__ = ["model_fingerprint"]

logger = logging.getLogger(__name__)


def _tensor_summary(t: Any) -> list[Any]:
    """dtype, shape, float64 sum and norm, and a strided sample of a tensor's values."""
    import torch

    t = t.detach()
    out: list[Any] = [str(t.dtype), list(t.shape)]
    if t.numel() == 0:
        return out
    flat = t.reshape(-1)
    if not (flat.is_floating_point() or flat.is_complex()):
        flat = flat.to(torch.float64)
    # every value takes part in the sum and the norm; the sample pins down exact bits
    out.append(repr(float(torch.sum(flat, dtype=torch.float64).item())))
    out.append(repr(float(torch.linalg.vector_norm(flat, dtype=torch.float64).item())))
    step = max(1, flat.numel() // 64)
    sample = flat[::step][:64].to(torch.float64).cpu().numpy()
    out.append(hashlib.sha256(sample.tobytes()).hexdigest()[:16])
    return out


def model_fingerprint(model: Any) -> str | None:
    """A hex digest that changes when the model's weights, tokenizer or modules change.

    Hashes the module structure (``repr``: layer types, pooling mode, normalisation),
    every tensor of the ``state_dict`` (name, dtype, shape, float64 sum and norm, a
    strided sample of 64 values) and the tokenizer (class and vocabulary). Takes about
    0.2 s for MiniLM on one CPU thread; :class:`Encoder` computes it once, on first use.
    Returns ``None`` for an object without a ``state_dict`` (a stand-in model): such an
    encoder is not cached, because nothing identifies what it computes.

    Example:
        >>> model_fingerprint(object()) is None
        True
    """
    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        return None
    h = hashlib.sha256()
    h.update(type(model).__qualname__.encode())
    with contextlib.suppress(Exception):
        h.update(repr(model).encode("utf-8", "replace"))
    try:
        items = list(state_dict().items())
    except Exception as exc:  # an exotic model that cannot list its tensors
        logger.debug("no fingerprint for %s: state_dict() failed (%s)", type(model).__name__, exc)
        return None
    for name, tensor in items:
        try:
            summary = _tensor_summary(tensor)
        except Exception as exc:  # meta / quantised tensors: fall back to their shape
            summary = [str(getattr(tensor, "dtype", "?")), list(getattr(tensor, "shape", [])), type(exc).__name__]
        h.update(json.dumps([name, summary]).encode())
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        h.update(type(tokenizer).__qualname__.encode())
        with contextlib.suppress(Exception):
            vocab = sorted(tokenizer.get_vocab().items())
            h.update(json.dumps(vocab, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        with contextlib.suppress(Exception):
            h.update(repr(getattr(tokenizer, "do_lower_case", None)).encode())
    return h.hexdigest()
