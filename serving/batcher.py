"""Micro-batching: requests that arrive while the model is busy are answered together.

The recommender is built for batches: one call for 20 shoppers costs little more than one
for a single shopper, because most of a call is fixed work (sparse products, feature
assembly, one LightGBM call). A :class:`Batcher` owns one thread per model version; each
request hands its work over and waits. The thread takes everything queued at that moment
(up to ``max_batch``) and answers it in one call. It never waits for more: an idle service
answers a lone request at once, a busy one in batches as large as the load makes them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``answer`` gets the batch's items and returns one result per item, in order; a
    result that is an exception is raised to that item's caller only."""

    def __init__(
        self,
        answer: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 64,
        name: str = "batcher",
    ) -> None:
        self.answer = answer
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.requests = 0

    def submit(self, item: T) -> Future[R]:
        """A future of the answer to ``item`` (async callers await
        ``asyncio.wrap_future`` of it instead of blocking a thread)."""
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def __call__(self, item: T, timeout: float = 30.0) -> R:
        """The answer to ``item`` (its exception is raised here)."""
        return self.submit(item).result(timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            self.batches += 1
            self.requests += len(batch)
            try:
                results = self.answer([item for item, _ in batch])
            except BaseException as exc:  # every waiter hears of it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # this request's own failure
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
