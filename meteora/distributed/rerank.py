"""Distributed batch reranking on Ray: ``Reranker.search_batch`` over a Dataset of queries.

Each actor of the pool builds one :class:`~meteora.reranker.Reranker` (from a picklable
factory, e.g. ``functools.partial(Reranker, generator="http://llm:8000/v1")`` so that
every actor sends its rationale requests to one shared OpenAI-compatible server) and
loads the index once (a folder every node can read; the dense member gets the
reranker's encoder, as in a single process). Query batches then go through
``search_batch`` — the single-process path — and come back, in order, as
``RerankResult.to_dict()`` records.

Example:
    >>> from functools import partial
    >>> from meteora.reranker import Reranker
    >>> rows = rerank_on_ray(["fever in children?"], "idx/", partial(Reranker, generator=None),
    ...                      k=20, address="auto", workers=4)  # doctest: +SKIP
    >>> rows[0]["selected"][0]["id"]  # doctest: +SKIP
    'p17'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from meteora.distributed.session import ray_session
from meteora.errors import InvalidInputError
from meteora.types import check_queries

__all__ = ["rerank_dataset", "rerank_on_ray", "RerankActor", "load_for_reranker"]


def load_for_reranker(index: str | os.PathLike[str], reranker: Any) -> Any:
    """Load the index in ``index`` with ``reranker``'s encoder for its dense members (so
    stored embeddings are reused, exactly as ``search_batch`` does in one process)."""
    from meteora.retrievers.base import load_retriever
    from meteora.retrievers.index_files import read_manifest
    from meteora.retrievers.storage import resolve_index

    kind = read_manifest(resolve_index(index), verify_files=False)["kind"]
    return load_retriever(index, **({"encoder": reranker.encoder} if kind in ("dense", "hybrid") else {}))


class RerankActor:
    """A Ray actor holding one Reranker and one loaded index; maps query batches to results."""

    def __init__(self, index: str, make_reranker: Callable[[], Any], k: int, threads: int = 1) -> None:
        from meteora.settings import set_num_threads

        set_num_threads(max(1, threads))
        self.reranker = make_reranker()
        self.retriever = load_for_reranker(index, self.reranker)
        self.k = k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        queries = [str(q) for q in batch["query"]]
        results = self.reranker.search_batch(queries, self.retriever, k=self.k)
        out = [json.dumps(r.to_dict(), ensure_ascii=False) for r in results]
        return {**batch, "result": np.array(out, dtype=object)}


def rerank_dataset(
    ds: Any,
    index: str | os.PathLike[str],
    make_reranker: Callable[[], Any],
    *,
    k: int = 50,
    workers: int = 1,
    batch_size: int = 16,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> Any:
    """Add a ``result`` column (``RerankResult.to_dict()`` as JSON) to a Ray Dataset with a
    ``query`` column, computed by ``workers`` reranker actors, ``batch_size`` queries per
    ``search_batch`` call."""
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    return ds.map_batches(
        RerankActor,
        fn_constructor_kwargs={"index": str(index), "make_reranker": make_reranker, "k": k,
                               "threads": max(1, int(cpus_per_worker))},
        batch_size=batch_size, batch_format="numpy", concurrency=workers,
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
    )


def rerank_on_ray(
    queries: Sequence[str],
    index: str | os.PathLike[str],
    make_reranker: Callable[[], Any],
    *,
    k: int = 50,
    address: str | None = None,
    workers: int = 1,
    batch_size: int = 16,
    cpus_per_worker: float = 1.0,
) -> list[dict[str, Any]]:
    """``Reranker.search_batch(queries, index, k)`` on a Ray cluster; one
    ``RerankResult.to_dict()`` per query, in order.

    Raises:
        InvalidInputError: bad queries, or ``make_reranker`` is not callable.
    """
    queries = check_queries(queries)
    if not callable(make_reranker):
        raise InvalidInputError("make_reranker must be a callable returning a Reranker (e.g. functools.partial(Reranker, ...))")
    if not queries:
        return []
    with ray_session(address) as ray:
        ds = ray.data.from_items([{"query": q} for q in queries])
        out = rerank_dataset(ds, index, make_reranker, k=k, workers=workers, batch_size=batch_size,
                             cpus_per_worker=cpus_per_worker)
        rows = [json.loads(r["result"]) for r in out.iter_rows()]
    return rows
