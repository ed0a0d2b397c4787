"""Distributed index build on Ray: the same index as :func:`meteora.retrievers.streaming.build_index`.

The pipeline (Ray Data, order preserved end to end):

1. **read**: JSONL files as line-aligned byte ranges, one read task each, lines parsed
   by :func:`meteora.corpus.parse_jsonl_line` (:mod:`meteora.distributed.jsonl_ranges`:
   no task holds a whole file, and the actor pool gets many blocks to share), or
   ``read_parquet`` (rows as
   :func:`meteora.corpus.parquet_row`); every item becomes a canonical JSON record, or an
   error that the driver raises at the item's place, with its ``file:line``.
2. **encode**: ``map_batches`` over an actor pool of :class:`PassageEncoder` (one model
   per actor, on CPU or GPU): the retriever's own encoding path
   (``DenseRetriever._encode``: the encoder, then L2 normalisation).
3. **write** (driver): the batches arrive in corpus order; passages go to
   ``passages.sqlite``, embeddings to ``embeddings.npy`` and BM25 token ids to their file,
   through the single-machine writers (:func:`meteora.retrievers.streaming.index_writer`).
4. **IVF / IVF-PQ**: one index is trained on the seeded sample of rows (as on one
   machine), serialised to Ray tasks that each add one shard of rows with their row ids,
   and the shards are merged back in order (``merge_from``): the inverted lists end up
   as a sequential add would leave them. HNSW cannot be merged and is built on the
   driver; a flat index needs no build.

Items get the same default ids (their 0-based number) and the same checks as on one
machine; embeddings agree within float tolerance (batch composition may change the last
bits), so exact search returns the same results.

Example:
    >>> from meteora.retrievers import DenseRetriever
    >>> build_index_on_ray(["part-0.jsonl", "part-1.jsonl"], "idx/", DenseRetriever(index_type="ivfpq"),
    ...                    address="auto", workers=8, gpus_per_worker=1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meteora.corpus import checked_passage, parquet_row
from meteora.distributed.session import ray_session
from meteora.errors import InvalidInputError, MeteoraError
from meteora.retrievers.ann import ADD_BLOCK, AnnSpec
from meteora.retrievers.base import Retriever
from meteora.retrievers.bm25 import BM25Retriever
from meteora.retrievers.dense import DenseRetriever
from meteora.retrievers.hybrid import HybridRetriever
from meteora.retrievers.storage import publish_index
from meteora.retrievers.streaming import index_writer, load_like, write_chunks
from meteora.types import Passage

__all__ = ["build_index_on_ray", "corpus_dataset", "encode_dataset", "PassageEncoder"]

logger = logging.getLogger(__name__)

_FORMATS = (".jsonl", ".parquet")
#: CPUs a read or parse task asks for: small, so that encoder actors holding fractions of
#: every node's CPUs never leave a reading task unschedulable
READ_CPUS = 0.25


def _corpus_files(sources: Any) -> tuple[list[str], str]:
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(str(f) for f in sorted(p.iterdir()) if f.suffix in _FORMATS)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise InvalidInputError(f"corpus file {str(p)!r} does not exist")
    suffixes = {Path(p).suffix for p in paths}
    if not paths:
        raise InvalidInputError(f"no .jsonl or .parquet corpus files in {[str(i) for i in items]}")
    if len(suffixes) > 1 or not suffixes <= set(_FORMATS):
        raise InvalidInputError(
            f"a distributed build reads .jsonl or .parquet files, all of one kind; got {sorted(suffixes)}"
        )
    return paths, suffixes.pop()


def _records(paths: list[Any], lines: list[int], records: list[str], errors: list[str]) -> dict[str, np.ndarray]:
    return {
        "path": np.array(paths, dtype=object), "line": np.array(lines, dtype=np.int64),
        "record": np.array(records, dtype=object), "error": np.array(errors, dtype=object),
    }


def _parquet_records(batch: Any) -> dict[str, np.ndarray]:
    """Parquet rows (with the ``path`` Ray adds) → canonical JSON records."""
    paths, records, errors = [], [], []
    for row in batch.to_pylist():
        paths.append(row.pop("path"))
        try:
            records.append(json.dumps(parquet_row(row), allow_nan=False))
            errors.append("")
        except (TypeError, ValueError) as exc:
            records.append("")
            errors.append(f"a value is not JSON-serialisable ({exc})")
    return _records(paths, [0] * len(paths), records, errors)


def corpus_dataset(sources: Any, *, range_bytes: int | None = None) -> tuple[Any, str]:
    """A Ray Dataset of canonical corpus records (columns ``path``, ``line``,
    ``record``, ``error``) in corpus order, and the files' format (``.jsonl``/``.parquet``).

    JSONL files are read as line-aligned byte ranges of about ``range_bytes`` (``None``:
    :func:`~meteora.distributed.jsonl_ranges.auto_range_bytes`), one read task each
    (:mod:`meteora.distributed.jsonl_ranges`); Parquet files by row group."""
    import ray

    from meteora.distributed.jsonl_ranges import jsonl_datasource

    paths, fmt = _corpus_files(sources)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    light = {"num_cpus": READ_CPUS}
    if fmt == ".jsonl":
        return ray.data.read_datasource(jsonl_datasource(paths, range_bytes), ray_remote_args=light), fmt
    ds = ray.data.read_parquet(paths, include_paths=True, ray_remote_args=light)
    return ds.map_batches(_parquet_records, batch_format="pyarrow", **light), fmt


class PassageEncoder:
    """A Ray actor holding one encoder: adds an ``embedding`` column to record batches.

    It embeds exactly as ``DenseRetriever._encode`` does (same model, batch size and
    normalisation); records that fail the passage checks get zeros (the driver raises).
    """

    def __init__(self, encoder: str | None, batch_size: int, device: str | None = None, threads: int = 1) -> None:
        from meteora.embeddings.encoder import Encoder
        from meteora.settings import set_num_threads

        set_num_threads(max(1, threads))
        self.retriever = DenseRetriever(Encoder(encoder, device=device, cache=False), batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts, rows = [], []
        for i, (record, error) in enumerate(zip(batch["record"], batch["error"], strict=True)):
            if error:
                continue
            try:
                texts.append(checked_passage(json.loads(record), 0, "record").text)
                rows.append(i)
            except (MeteoraError, ValueError):
                continue
        dim = self.retriever.encoder.dim
        emb = np.zeros((len(batch["record"]), dim), dtype=np.float32)
        if texts:
            emb[rows] = self.retriever._encode(texts)
        return {**batch, "embedding": emb}


def _encoder_spec(dense: DenseRetriever) -> str | None:
    spec = dense._encoder_spec
    if spec is None or isinstance(spec, (str, os.PathLike)):
        return None if spec is None else str(spec)
    name = getattr(dense.encoder, "name", None)
    if not isinstance(name, str) or not (Path(name).is_dir() or "/" in name):
        raise InvalidInputError(
            "a distributed build loads the encoder on every worker by name or folder; give the "
            "DenseRetriever a model name or folder instead of an encoder object"
        )
    return name


def encode_dataset(
    ds: Any, dense: DenseRetriever, *, workers: int, batch_size: int, gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> Any:
    """``ds`` with an ``embedding`` column computed by an actor pool of ``workers`` encoders."""
    return ds.map_batches(
        PassageEncoder,
        fn_constructor_kwargs={
            "encoder": _encoder_spec(dense), "batch_size": dense.batch_size,
            "device": "cuda" if gpus_per_worker else None, "threads": max(1, int(cpus_per_worker)),
        },
        batch_size=batch_size, batch_format="numpy", concurrency=workers,
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
    )


def _driver_chunks(ds: Any, fmt: str, batch_size: int, encoded: bool) -> Iterator[tuple[list[Passage], list[str], np.ndarray | None]]:
    """Batches in corpus order → checked passages (ids numbered as on one machine)."""
    count = 0
    rows_in: dict[str, int] = {}
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        passages: list[Passage] = []
        where: list[str] = []
        for path, line, record, error in zip(batch["path"], batch["line"], batch["record"], batch["error"], strict=True):
            if fmt == ".jsonl":
                at = f"{path}:{line}"
            else:
                rows_in[path] = rows_in.get(path, 0) + 1
                at = f"{path}: row {rows_in[path]}"
            if error:
                raise InvalidInputError(error if fmt == ".jsonl" else f"{at}: {error}")
            passages.append(checked_passage(json.loads(record), count, at))
            where.append(at)
            count += 1
        if passages:
            yield passages, where, np.asarray(batch["embedding"], dtype=np.float32) if encoded else None
    if count == 0:
        raise InvalidInputError("the corpus holds no passages")


def shard_adder(ray: Any, workers: int = 1, shard_size: int | None = None) -> Any:
    """An ``add_vectors`` for :func:`~meteora.retrievers.streaming.index_writer` that adds
    IVF shards in Ray tasks and merges them in order (HNSW and flat: added here).
    Shards hold ``shard_size`` rows (default: two per worker, at least 65,536)."""

    def add(spec: AnnSpec, index: Any, embeddings: np.ndarray) -> None:
        import faiss

        from meteora.retrievers.ann import add_blocks

        n = len(embeddings)
        size = shard_size or max(ADD_BLOCK, math.ceil(n / (2 * workers)))
        if spec.index_type not in ("ivf", "ivfpq") or n <= size:
            add_blocks(index, embeddings)
            return
        trained = ray.put(faiss.serialize_index(index))
        task = ray.remote(_add_shard)
        futures = [
            task.remote(trained, ray.put(np.ascontiguousarray(embeddings[a : a + size], dtype=np.float32)), a)
            for a in range(0, n, size)
        ]
        ivf = faiss.extract_index_ivf(index)
        for future in futures:  # merged in row order: the lists end up as a sequential add leaves them
            shard = faiss.deserialize_index(ray.get(future))
            ivf.merge_from(faiss.extract_index_ivf(shard), 0)
        index.ntotal = ivf.ntotal
        logger.info("merged %d shards of up to %d vectors", len(futures), size)

    return add


def _add_shard(index_bytes: np.ndarray, vectors: np.ndarray, start: int) -> np.ndarray:
    import faiss

    index = faiss.deserialize_index(index_bytes)
    index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
    return faiss.serialize_index(index)


def default_workers(resources: dict[str, float], gpus_per_worker: float, cpus_per_worker: float) -> int:
    """Encoder actors for a cluster: one per ``gpus_per_worker`` GPUs (or per
    ``cpus_per_worker`` CPUs), leaving one CPU free so the reading tasks always run.

    Example:
        >>> default_workers({"CPU": 16.0, "GPU": 4.0}, 1, 1), default_workers({"CPU": 2.0}, 0, 1)
        (4, 1)
    """
    by_cpu = int(max(resources.get("CPU", 1.0) - 1.0, 0.0) // cpus_per_worker)
    if gpus_per_worker:
        return max(1, min(int(resources.get("GPU", 0.0) // gpus_per_worker), by_cpu))
    return max(1, by_cpu)


def _dense_member(retriever: Retriever) -> DenseRetriever | None:
    members = retriever.retrievers if isinstance(retriever, HybridRetriever) else [retriever]
    dense = [m for m in members if isinstance(m, DenseRetriever)]
    if len(dense) > 1:
        raise InvalidInputError("a distributed build encodes for one dense retriever; give the hybrid one dense member")
    return dense[0] if dense else None


def build_index_on_ray(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    directory: str | os.PathLike[str],
    retriever: Retriever | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 1024,
    shard_size: int | None = None,
    range_bytes: int | None = None,
) -> Retriever:
    """Build an index over ``sources`` on a Ray cluster; returns the loaded index.

    Args:
        sources: ``.jsonl`` or ``.parquet`` files (or folders of them), read in order:
            every node must be able to read them (a shared filesystem or object store).
        directory: the index folder, written by this process (the driver).
        retriever: an unindexed retriever whose settings the index takes (default: BM25
            + MiniLM with ``index_type="auto"``). Its dense member is encoded on the
            cluster; BM25 tokens are counted here.
        address: see :func:`~meteora.distributed.session.ray_session`.
        workers: encoder actors (default: :func:`default_workers`). Actors hold their
            CPUs for the whole build: leave CPUs for the reading tasks (at least
            ``READ_CPUS`` on some node), or the pipeline waits forever.
        gpus_per_worker: GPUs per encoder actor (0: encode on CPU).
        cpus_per_worker: CPUs per encoder actor (its torch threads).
        batch_size: records per actor call and per driver write.
        shard_size: rows per IVF add task (default: two shards per worker, at least 65,536).
        range_bytes: JSONL bytes per read task (default: about 16 ranges over the corpus,
            within 64 KiB – 64 MiB; see :mod:`meteora.distributed.jsonl_ranges`).

    Raises:
        InvalidInputError: as :func:`~meteora.retrievers.streaming.build_index`.
        MissingDependencyError: Ray is not installed (``pip install "meteora-rerank[distributed]"``).
    """
    if retriever is None:
        retriever = HybridRetriever([BM25Retriever(), DenseRetriever(index_type="auto")])
    dense = _dense_member(retriever)
    with ray_session(address) as ray:
        ds, fmt = corpus_dataset(sources, range_bytes=range_bytes)
        if workers is None:
            workers = default_workers(ray.cluster_resources(), gpus_per_worker, cpus_per_worker)
        if dense is not None:
            ds = encode_dataset(ds, dense, workers=workers, batch_size=batch_size, gpus_per_worker=gpus_per_worker,
                                cpus_per_worker=cpus_per_worker)
        adder = shard_adder(ray, workers=workers, shard_size=shard_size)

        def write(folder: Path) -> None:
            writer = index_writer(retriever, folder, add_vectors=adder)
            write_chunks(writer, _driver_chunks(ds, fmt, batch_size, dense is not None))

        publish_index(directory, write)
    return load_like(retriever, directory)
