"""One :meth:`~meteora.rationales.generator.RationaleGenerator.generate` call as data:
:class:`GenerationPlan` holds the queries and options, the rationale sets already known
(cache hits, then each generated batch) and the prompts still to run, so the sync
``generate`` and the async ``agenerate`` drive the same steps.

Example:
    >>> plan = GenerationPlan(False, ["q1", "q2"], n=3, batch_size=1, include_query=False, filter=True)
    >>> plan.prompts = {"q1": "a long prompt", "q2": "short"}
    >>> plan.batches()
    [['q2'], ['q1']]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from meteora.lm.base import SamplingParams
from meteora.rationales.rationale_set import RationaleSet

__all__ = ["GenerationPlan"]


@dataclass
class GenerationPlan:
    """One :meth:`RationaleGenerator.generate` call: its queries and options, the sets
    already known (cache hits, then each generated batch), and the prompts still to run."""

    single: bool
    queries: list[str]
    n: int
    batch_size: int
    include_query: bool
    filter: bool
    fields: dict[str, Any] | None = None  # the cache key fields; None: not cached
    results: dict[str, RationaleSet] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)  # the misses' prompts
    params: SamplingParams | None = None
    probes: list[Any] = field(default_factory=list)

    def batches(self) -> list[list[str]]:
        """The misses in batches, prompts of similar lengths together (less padding)."""
        order = sorted(self.prompts, key=lambda q: len(str(self.prompts[q])))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def output(self) -> RationaleSet | list[RationaleSet]:
        """One set per query, in order (a repeated query gets its own copy)."""
        out = [copy.deepcopy(self.results[q]) if self.queries.count(q) > 1 else self.results[q] for q in self.queries]
        return out[0] if self.single else out
