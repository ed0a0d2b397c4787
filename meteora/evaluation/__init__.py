"""Evaluation harnesses: adapter perplexity (base vs adapter).

Example:
    >>> from meteora.evaluation import evaluate_adapter, to_markdown  # doctest: +SKIP
    >>> print(to_markdown(evaluate_adapter("smollm2", "adapters/med", "test.jsonl")))  # doctest: +SKIP
"""

from __future__ import annotations

from meteora.evaluation.adapter import evaluate_adapter, score_responses, to_markdown

__all__ = ["evaluate_adapter", "score_responses", "to_markdown"]
