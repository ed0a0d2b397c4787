"""Which runtime computes embeddings and evidence logits: ONNX Runtime or torch.

meteora's encoder (:class:`~meteora.embeddings.encoder.Encoder`) and evidence scorer
(:class:`~meteora.scorer.EvidenceScorer`) run either on torch (sentence-transformers:
needed for training, GPUs and any model) or on ONNX Runtime with the ``tokenizers``
library, which answers a query without importing torch, transformers or
sentence-transformers: a query-only process reaches its first selection several times
sooner, with less memory (``benchmarks/results/rerank_latency.json``, ``startup``).

The ONNX graphs are exported from the torch models once, by torch, into
``$METEORA_HOME/onnx/`` (:mod:`meteora.inference.export`), keyed by a digest of the
source files (weights, configuration, tokenizer; an adapter's too), so a changed model or
adapter is exported again; each export is checked against torch before it is published.

The choice (:func:`~meteora.inference.runtime.resolve_runtime`): ``runtime="auto"``
(the default) takes ONNX for meteora's default models on the CPU when onnxruntime is
installed and the export exists or can be made, and torch otherwise; ``"onnx"`` and
``"torch"`` force one (``"onnx"`` exports any supported local model on first use). The
environment variable ``METEORA_RUNTIME`` sets the default.

Example:
    >>> from meteora.inference import resolve_runtime
    >>> resolve_runtime("torch", None)
    'torch'

The parts: :mod:`meteora.inference.runtime` (the choice),
:mod:`meteora.inference.store` (where exports live and how they are keyed),
:mod:`meteora.inference.onnx_models` (running them: no torch) and
:mod:`meteora.inference.export` (making them: torch).
"""

from __future__ import annotations

from meteora.inference.runtime import RUNTIMES, onnx_runtime_available, resolve_runtime

__all__ = ["RUNTIMES", "resolve_runtime", "onnx_runtime_available"]
