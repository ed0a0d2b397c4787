"""Benchmarks that ship with the library (``meteora bench pubmedqa|bioasq|beir``).

The names below are imported lazily (on first use), so importing one part of the
harness (e.g. :mod:`meteora.bench.methods`) does not import the rest.

Example:
    >>> from meteora.bench import BenchmarkConfig, run_benchmark
    >>> cfg = BenchmarkConfig(dataset="beir", data_path="examples/beir_tiny", methods=["bm25"])
    >>> results = run_benchmark(cfg, write=False)                   # doctest: +SKIP
    >>> results["views"]["evidence"]["methods"]["bm25"]["NDCG@10"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BenchmarkConfig", "BenchmarkContext", "run_benchmark", "format_results", "build_benchmark"]

_LAZY = {
    "BenchmarkConfig": "meteora.bench.config",
    "BenchmarkContext": "meteora.bench.context",
    "build_benchmark": "meteora.bench.datasets",
    "run_benchmark": "meteora.bench.pubmedqa",
    "format_results": "meteora.bench.pubmedqa",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'meteora.bench' has no attribute {name!r}")
