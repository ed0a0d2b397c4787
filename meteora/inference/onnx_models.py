"""Run an exported encoder or cross-encoder with ONNX Runtime and ``tokenizers``: no torch.

:class:`OnnxSentenceEncoder` has the part of sentence-transformers' ``SentenceTransformer``
interface that :class:`~meteora.embeddings.encoder.Encoder` uses (``encode``,
``get_sentence_embedding_dimension``, ``max_seq_length``); :class:`OnnxCrossEncoder`
gives the logits of ``CrossEncoder.predict`` with no activation. Both tokenize as the
torch models do (the same tokenizer, saved at export time; right padding to the longest
text of a batch; ``longest_first`` truncation to ``max_seq_length`` tokens) and the
encoder pools and normalises as the model's sentence-transformers configuration says
(recorded in the export's manifest). Texts are batched by length, like
sentence-transformers, and returned in their order.

ONNX Runtime's intra-op threads follow ``$METEORA_NUM_THREADS`` or
:func:`meteora.settings.set_num_threads` (read when a session starts, and again when the
setting changes), else ONNX Runtime's default.

Example:
    >>> from meteora.inference.store import export_folder  # doctest: +SKIP
    >>> enc = OnnxSentenceEncoder(folder)                  # doctest: +SKIP
    >>> enc.encode(["fever", "pyrexia"], normalize_embeddings=True).shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora._io import read_json
from meteora.errors import InvalidInputError, ModelNotFoundError
from meteora.inference.store import MANIFEST_NAME
from meteora.settings import current_num_threads

__all__ = ["OnnxSentenceEncoder", "OnnxCrossEncoder", "POOLING_MODES"]

logger = logging.getLogger(__name__)

#: The sentence-transformers pooling modes the ONNX encoder reproduces.
POOLING_MODES = ("mean", "cls", "max")


class _OnnxTextModel:
    """An ONNX graph over token ids with the tokenizer it was exported with."""

    def __init__(self, folder: str | os.PathLike[str], manifest: dict[str, Any] | None = None, *, max_seq_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_json(self.folder / MANIFEST_NAME)
        self.name_or_path = str(self.manifest.get("source", self.folder))
        tok = self.manifest["tokenizer"]
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelNotFoundError(f"could not read the tokenizer of the ONNX export {self.folder}: {exc}") from exc
        self._pad = (int(tok["pad_id"]), str(tok["pad_token"]), int(tok.get("pad_type_id", 0)), tok.get("padding_side", "right"))
        self._truncation_side = tok.get("truncation_side", "right")
        self._max_seq_length = 0
        self.max_seq_length = int(max_seq_length if max_seq_length is not None else self.manifest["max_seq_length"])
        self._session: Any = None
        self._session_threads: int | None = None
        self._lock = threading.Lock()
        self.session  # noqa: B018 - load now: a broken export fails here, not on the first query

    @property
    def max_seq_length(self) -> int:
        """Tokens per text (or pair) after truncation."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise InvalidInputError(f"max_seq_length must be an integer >= 2, got {value!r}")
        limit = self.manifest.get("max_position_embeddings")
        if isinstance(limit, int) and value > limit:
            raise InvalidInputError(f"max_seq_length {value} exceeds the model's {limit} positions")
        self._max_seq_length = value

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (started again when the thread setting changed)."""
        threads = current_num_threads()
        if self._session is None or threads != self._session_threads:
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            try:
                self._session = ort.InferenceSession(str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime's own exception types
                raise ModelNotFoundError(
                    f"could not load the ONNX export {self.folder}: {exc}; delete that folder to export again, "
                    "or pass runtime='torch'"
                ) from exc
            self._session_threads = threads
            self._inputs = [i.name for i in self._session.get_inputs()]
        return self._session

    def tokenize(self, texts: Sequence[Any]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and token types of a batch of texts or (text, text) pairs,
        padded to its longest member, as int64 arrays."""
        pad_id, pad_token, pad_type_id, side = self._pad
        with self._lock:  # the tokenizer's truncation/padding state is shared
            self.tokenizer.enable_truncation(self.max_seq_length, strategy="longest_first", direction=self._truncation_side)
            self.tokenizer.enable_padding(direction=side, pad_id=pad_id, pad_type_id=pad_type_id, pad_token=pad_token)
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }

    def _run(self, texts: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The graph's first output for one batch, and the batch's attention mask."""
        features = self.tokenize(texts)
        session = self.session
        out = session.run(None, {name: features[name] for name in self._inputs})[0]
        return out, features["attention_mask"]

    def _batched(self, items: list[Any], batch_size: int, lengths: list[int], run: Any) -> list[np.ndarray]:
        """``run`` over batches of ``items`` sorted by length (longest first); results in order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        order = sorted(range(len(items)), key=lambda i: -lengths[i])
        out: list[np.ndarray] = [np.empty(0)] * len(items)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            for i, row in zip(idx, run([items[i] for i in idx]), strict=True):
                out[i] = row
        return out


class OnnxSentenceEncoder(_OnnxTextModel):
    """A sentence-transformers encoder exported to ONNX (see the module doc).

    Args:
        folder: an export written by :func:`meteora.inference.export.export_sentence_encoder`.
        manifest: its manifest, when already read.
        max_seq_length: tokens per text (``None``: the model's).

    Example:
        >>> enc = OnnxSentenceEncoder(folder)  # doctest: +SKIP
        >>> enc.get_sentence_embedding_dimension()  # doctest: +SKIP
        384
    """

    def __init__(self, folder: str | os.PathLike[str], manifest: dict[str, Any] | None = None, *, max_seq_length: int | None = None) -> None:
        super().__init__(folder, manifest, max_seq_length=max_seq_length)
        if self.manifest.get("pooling") not in POOLING_MODES:
            raise ModelNotFoundError(f"the ONNX export {self.folder} has an unsupported pooling {self.manifest.get('pooling')!r}")
        #: the torch model's fingerprint (:func:`meteora.embeddings.fingerprint.model_fingerprint`)
        self.source_fingerprint: str | None = self.manifest.get("fingerprint")

    def get_sentence_embedding_dimension(self) -> int:
        """Embedding dimension."""
        return int(self.manifest["dim"])

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        hidden, mask = self._run(texts)
        hidden = hidden.astype(np.float32, copy=False)
        pooling = self.manifest["pooling"]
        if pooling == "cls":
            pooled = hidden[:, 0]
        elif pooling == "max":
            pooled = np.where(mask[:, :, None] > 0, hidden, np.float32(-1e9)).max(axis=1)
        else:  # mean over the real tokens, as sentence-transformers' Pooling
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))
        if self.manifest.get("normalize"):
            pooled = _l2_normalise(pooled)
        return list(pooled)

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> np.ndarray:
        """Embeddings of ``texts`` as a ``(len(texts), dim)`` float32 array (the model's
        pooling and normalisation; ``normalize_embeddings`` L2-normalises again, as
        sentence-transformers does)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.get_sentence_embedding_dimension()), dtype=np.float32)
        rows = self._batched(texts, batch_size, [len(t) for t in texts], self._embed)
        out = np.stack(rows).astype(np.float32, copy=False)
        return _l2_normalise(out) if normalize_embeddings else out

    def __repr__(self) -> str:
        return f"OnnxSentenceEncoder({self.name_or_path!r}, dim={self.manifest.get('dim')}, pooling={self.manifest.get('pooling')!r})"


class OnnxCrossEncoder(_OnnxTextModel):
    """A one-logit sequence-classification model (a cross-encoder) exported to ONNX.

    Args:
        folder: an export written by :func:`meteora.inference.export.export_cross_encoder`.
        manifest: its manifest, when already read.
        max_seq_length: tokens per (query, passage) pair (``None``: the model's).

    Example:
        >>> ce = OnnxCrossEncoder(folder, max_seq_length=256)  # doctest: +SKIP
        >>> ce.predict([("does aspirin work?", "aspirin cut strokes")]).shape  # doctest: +SKIP
        (1,)
    """

    def _logits(self, pairs: list[tuple[str, str]]) -> list[np.ndarray]:
        logits, _ = self._run(pairs)
        return list(np.asarray(logits, dtype=np.float32).reshape(len(pairs), -1)[:, 0])

    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """The logit of each (query, passage) pair, as a float32 array."""
        pairs = [(str(a), str(b)) for a, b in pairs]
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        rows = self._batched(pairs, batch_size, [len(a) + len(b) for a, b in pairs], self._logits)
        return np.asarray(rows, dtype=np.float32)

    def __repr__(self) -> str:
        return f"OnnxCrossEncoder({self.name_or_path!r}, max_seq_length={self.max_seq_length})"


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (at least 1e-12), as ``torch.nn.functional.normalize``."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))[:, None]
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
