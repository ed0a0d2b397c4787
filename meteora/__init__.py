"""meteora — rationale-driven evidence selection for medical RAG.

A METEORA-style reranker: BM25 + dense retrieval gathers candidates, a causal LM writes
rationales (what evidence a correct passage must contain), passages are selected by
embedding similarity to the rationales with an adaptive elbow cutoff, neighbours are
added, and a verifier stage — by default the poison defence, which sees the whole
candidate pool — drops suspicious added documents and reports conflicting findings.

Research software, not medical advice.

Example:
    >>> from meteora import Passage
    >>> Passage("Aspirin lowers fever.", id="p1").doc_id
    'p1'

Heavy submodules (torch, transformers, faiss) are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from meteora.errors import (
    IndexFormatError,
    InvalidInputError,
    MeteoraError,
    MissingDependencyError,
    ModelNotFoundError,
)
from meteora.types import Hit, Passage, Ranking, to_passages

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "meteora.embeddings.encoder",
    "BM25Retriever": "meteora.retrievers.bm25",
    "DenseRetriever": "meteora.retrievers.dense",
    "HybridRetriever": "meteora.retrievers.hybrid",
    "load_retriever": "meteora.retrievers.base",
    "RationaleGenerator": "meteora.rationales.generator",
    "RationaleSet": "meteora.rationales.rationale_set",
    "PromptTemplate": "meteora.rationales.templates",
    "EvidenceSelector": "meteora.selection.selector",
    "SelectionResult": "meteora.selection.results",
    "SelectorSettings": "meteora.selection.selector_settings",
    "Verifier": "meteora.verifier",
    "Verdict": "meteora.verdicts",
    "PoolDefence": "meteora.pool_defence",
    "Reranker": "meteora.reranker",
    "RerankResult": "meteora.rerank_result",
    "RankedDocument": "meteora.rerank_result",
}

__all__ = [
    "Passage",
    "Hit",
    "Ranking",
    "to_passages",
    "MeteoraError",
    "InvalidInputError",
    "ModelNotFoundError",
    "IndexFormatError",
    "MissingDependencyError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meteora' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
