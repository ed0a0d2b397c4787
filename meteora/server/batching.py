"""A small asyncio micro-batcher: concurrent requests become one batched model call.

Requests arrive one by one on the event loop; :class:`MicroBatcher` queues them, waits
at most ``max_wait_s`` after the first one for others to arrive (or until
``max_batch_size`` are there), and runs the blocking batch function once for all of
them in a one-thread executor — so the models run one batch at a time, off the event
loop, and a busy server batches more on its own (everything that queued while a batch
ran goes into the next one). When a batch fails, its items are retried one by one, so
one bad request cannot fail the others. A full queue is refused at once
(:class:`QueueFullError`) rather than growing without bound.

Example:
    >>> import asyncio
    >>> calls = []
    >>> def double(xs):
    ...     calls.append(len(xs))
    ...     return [2 * x for x in xs]
    >>> async def main():
    ...     b = MicroBatcher(double, max_batch_size=8, max_wait_s=0.05)
    ...     out = await asyncio.gather(*(b.submit(i) for i in range(5)))
    ...     await b.aclose()
    ...     return out
    >>> asyncio.run(main()), calls
    ([0, 2, 4, 6, 8], [5])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from meteora.errors import InvalidInputError, MeteoraError

__all__ = ["MicroBatcher", "BatchStats", "QueueFullError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(MeteoraError):
    """Too many requests are waiting; the client should retry later (HTTP 503)."""


@dataclass
class BatchStats:
    """Counters of a :class:`MicroBatcher` (for ``GET /health`` and tests)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_batches: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "failed_batches": self.failed_batches}


class MicroBatcher(Generic[T, R]):
    """Run ``fn(items) -> results`` (blocking, one result per item, same order) on
    batches of concurrently submitted items.

    Args:
        fn: the batch function; it runs in a dedicated one-thread executor.
        max_batch_size: most items per call.
        max_wait_s: how long the first item of a batch waits for company.
        max_queue: most items waiting; beyond it :meth:`submit` raises
            :class:`QueueFullError`.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch_size: int = 8,
                 max_wait_s: float = 0.01, max_queue: int = 256) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(max_wait_s, (int, float)) or isinstance(max_wait_s, bool) or max_wait_s < 0:
            raise InvalidInputError(f"max_wait_s must be a number >= 0, got {max_wait_s!r}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = float(max_wait_s)
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteora-batch")
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    def _ensure_worker(self) -> asyncio.Queue[tuple[T, asyncio.Future[R]]]:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run_forever())
        return self._queue

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result (or its exception)."""
        queue = self._ensure_worker()
        if queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{queue.qsize()} requests are already waiting; retry later")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.stats.requests += 1
        queue.put_nowait((item, fut))
        return await fut

    async def _next_batch(self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]]) -> list[tuple[T, asyncio.Future[R]]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.done()]  # drop cancelled requests

    async def _run_forever(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = await self._next_batch(queue)
            if batch:
                await self._run(batch)

    async def _call(self, items: list[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        results = list(await loop.run_in_executor(self._executor, self.fn, items))
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        return results

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        try:
            results = await self._call([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            self.stats.failed_batches += 1
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            logger.info("a batch of %d failed (%s); retrying its requests one by one", len(batch), exc)
            for item, fut in batch:
                try:
                    _settle(fut, result=(await self._call([item]))[0])
                except Exception as one_exc:  # noqa: BLE001
                    _settle(fut, exc=one_exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            _settle(fut, result=result)

    async def aclose(self) -> None:
        """Stop the worker and the executor (pending requests are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                fut.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
