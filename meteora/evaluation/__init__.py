"""Evaluation harnesses: PubMedQA question answering with the selected evidence as context.

:func:`evaluate_qa` asks a reader model each question with no context, the gold
abstract, the top ``k`` retrieved chunks or a METEORA selection, and scores the answers
(:func:`qa_metrics`); the selections come from :mod:`meteora.evaluation.selections`.
(The adapter perplexity table, base vs adapter, is :func:`meteora.training.evaluate_adapter`.)

Example:
    >>> from meteora.evaluation import evaluate_qa  # doctest: +SKIP
    >>> report = evaluate_qa(reader, benchmark, conditions=["none", "gold", "fixed-k"], limit=50)  # doctest: +SKIP
"""

from __future__ import annotations

from meteora.evaluation.qa import evaluate_qa
from meteora.evaluation.reader import parse_answer, qa_metrics
from meteora.evaluation.selections import (
    build_retriever,
    candidate_pools,
    fixed_k_selections,
    meteora_selections,
)

__all__ = [
    "evaluate_qa",
    "parse_answer",
    "qa_metrics",
    "build_retriever",
    "candidate_pools",
    "fixed_k_selections",
    "meteora_selections",
]
