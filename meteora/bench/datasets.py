"""The datasets a benchmark can run on, registered by name.

Datasets are :class:`~meteora.datasets.pubmedqa.RetrievalBenchmark` objects, built by a
function registered by import path in :data:`DATASETS` (``pubmedqa``, ``bioasq``, and
``beir`` for any BEIR-format folder given as ``config.data_path``), or given directly:
``BenchmarkContext(config, benchmark=my_benchmark)``. Nothing here imports a dataset
module until :func:`build_benchmark` is called.

Example:
    >>> sorted(DATASETS)
    ['beir', 'bioasq', 'pubmedqa']
    >>> DATASET_SPLITS["bioasq"], DATASET_TITLES["pubmedqa"]
    (('dev', 'train', 'all'), 'PubMedQA PQA-L')
    >>> build_benchmark("pubmedqa")  # doctest: +SKIP
    RetrievalBenchmark(name='pubmedqa', passages=3358, ...)
"""

from __future__ import annotations

import importlib
from typing import Any

from meteora.errors import InvalidInputError

__all__ = ["DATASETS", "DATASET_SPLITS", "DATASET_TITLES", "build_benchmark"]

#: dataset name -> "module:function" building its RetrievalBenchmark from a path (or None)
DATASETS: dict[str, str] = {
    "pubmedqa": "meteora.datasets.pubmedqa:build_pubmedqa_benchmark",
    "bioasq": "meteora.datasets.bioasq:build_bioasq_benchmark",
    "beir": "meteora.datasets.beir:build_beir_benchmark",
}
#: the splits each registered dataset has, its default (evaluation) split first (empty:
#: the data decides, e.g. BEIR's qrels files)
DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "pubmedqa": ("test", "train", "all"),
    "bioasq": ("dev", "train", "all"),
    "beir": (),
}
#: names shown in results files and plots
DATASET_TITLES: dict[str, str] = {"pubmedqa": "PubMedQA PQA-L", "bioasq": "BioASQ", "beir": "BEIR"}


def build_benchmark(name: str, path: str | None = None) -> Any:
    """Build the registered dataset ``name`` (see :data:`DATASETS`) from ``path``.

    Raises:
        InvalidInputError: an unknown name, or a registered builder whose module is missing.

    Example:
        >>> build_benchmark("pubmedqa")  # doctest: +SKIP
        RetrievalBenchmark(name='pubmedqa', passages=3358, ...)
    """
    if name not in DATASETS:
        raise InvalidInputError(
            f"unknown dataset {name!r}; available: {sorted(DATASETS)} "
            "(or pass benchmark=<RetrievalBenchmark> to BenchmarkContext / run_benchmark)"
        )
    module_name, _, func = DATASETS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise InvalidInputError(
            f"dataset {name!r} needs the module {module_name}, which this installation does not have; "
            "update meteora or pass benchmark=<RetrievalBenchmark>"
        ) from exc
    return getattr(module, func)(path)
