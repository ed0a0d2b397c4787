"""Evaluation harnesses: adapter perplexity (base vs adapter).

Example:
    >>> from meteora.evaluation import evaluate_adapter, to_markdown  # doctest: +SKIP
    >>> print(to_markdown(evaluate_adapter("smollm2", "adapters/med", "test.jsonl")))  # doctest: +SKIP
"""

from __future__ import annotations

from meteora.evaluation.adapter import evaluate_adapter, score_responses, to_markdown
from meteora.evaluation.qa import LoglikScorer, evaluate_qa, parse_answer, qa_metrics
from meteora.evaluation.qa import to_markdown as qa_to_markdown
from meteora.evaluation.selections import (
    build_retriever,
    candidate_pools,
    fixed_k_selections,
    meteora_selections,
)

__all__ = [
    "evaluate_adapter",
    "score_responses",
    "to_markdown",
    "LoglikScorer",
    "build_retriever",
    "candidate_pools",
    "evaluate_qa",
    "fixed_k_selections",
    "meteora_selections",
    "parse_answer",
    "qa_metrics",
    "qa_to_markdown",
]
