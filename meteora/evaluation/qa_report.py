"""The report of a PubMedQA answer-accuracy run: :func:`to_markdown`, one table row per
condition of :func:`meteora.evaluation.qa.evaluate_qa`'s result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["to_markdown"]


def to_markdown(result: Mapping[str, Any]) -> str:
    """A markdown table of an :func:`evaluate_qa` result, one row per condition.

    Example:
        >>> print(to_markdown({"split": "test", "n_questions": 2, "answer_mode": "loglik", "reader": "m", "k": 3,
        ...     "gold_distribution": {"yes": 1, "no": 1, "maybe": 0},
        ...     "conditions": {"none": {"accuracy": 0.5, "macro_f1": 0.333, "predicted_distribution":
        ...     {"yes": 2, "no": 0, "maybe": 0, "unparsed": 0}, "unparsed": 0, "n": 2, "mean_contexts": 0.0,
        ...     "seconds_per_question": 0.1}}}).splitlines()[-1])
        | none | 0.500 | 0.333 | 2 / 0 / 0 | 0 | 0.0 | – | 2 | 0.10 |
    """
    if not isinstance(result, Mapping) or "conditions" not in result:
        raise InvalidInputError("to_markdown expects the dict returned by evaluate_qa")
    g = result.get("gold_distribution", {})
    lines = [
        f"PubMedQA answer accuracy — reader `{result.get('reader', '?')}`, split `{result.get('split', '?')}`, "
        f"{result.get('n_questions', '?')} questions, answer mode `{result.get('answer_mode', '?')}`"
        f"{' (next-token log-probabilities)' if result.get('scoring') == 'next-token' else ''}, "
        f"fixed-k k={result.get('k', '?')}; gold labels yes/no/maybe = "
        f"{g.get('yes', 0)} / {g.get('no', 0)} / {g.get('maybe', 0)}.",
        "",
        "| condition | accuracy | macro-F1 | predicted yes / no / maybe | unparsed | mean contexts | context tokens | n | s / question |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["conditions"].items():
        d = m.get("predicted_distribution", {})
        tokens = m.get("mean_context_tokens")
        tok = f"{tokens:.0f}" if isinstance(tokens, (int, float)) else "–"
        lines.append(
            f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {d.get('yes', 0)} / {d.get('no', 0)} / "
            f"{d.get('maybe', 0)} | {m.get('unparsed', 0)} | {m.get('mean_contexts', 0.0):.1f} | {tok} | {m.get('n', 0)} | "
            f"{m.get('seconds_per_question', 0.0):.2f} |"
        )
    return "\n".join(lines)
