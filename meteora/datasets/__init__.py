"""Benchmark datasets.

Currently PubMedQA (PQA-L) as a chunk-retrieval benchmark; see
:mod:`meteora.datasets.pubmedqa`.

Example:
    >>> from meteora.datasets import build_pubmedqa_benchmark
    >>> bench = build_pubmedqa_benchmark()        # doctest: +SKIP
    >>> len(bench.corpus), len(bench.queries)      # doctest: +SKIP
    (3358, 1000)
"""

from __future__ import annotations

from meteora.datasets.pubmedqa import RetrievalBenchmark, build_pubmedqa_benchmark
from meteora.datasets.pubmedqa_records import (
    EVIDENCE_LABELS,
    PubMedQARecord,
    load_pubmedqa,
    load_test_ids,
)

__all__ = [
    "EVIDENCE_LABELS",
    "PubMedQARecord",
    "RetrievalBenchmark",
    "build_pubmedqa_benchmark",
    "load_pubmedqa",
    "load_test_ids",
]
