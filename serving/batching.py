"""Micro-batching: concurrent requests share one online-store read, one forward pass, one search.

Single-customer ``/assign`` calls are dominated by fixed costs (a store round trip, a model
call, a FAISS call). Requests that arrive within ``max_wait_ms`` of each other are merged
into one call of ``process`` (run in a worker thread so the event loop keeps accepting
requests) and each caller gets its own slice back.

A failure of the merged call is never blamed on the whole batch blindly: exceptions listed
in ``shared_errors`` (e.g. "online store down": every caller would fail alike) are raised
in every caller, and any other exception makes each request of the batch run again on its
own, so one request's bad input fails that request only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

Item = TypeVar("Item")
Shared = TypeVar("Shared")


@dataclass
class _Pending(Generic[Shared, Item]):
    ids: list[int]
    future: asyncio.Future[tuple[Any, list[Any]]] = field(repr=False)


class MicroBatcher(Generic[Shared, Item]):
    """``await batcher.submit(ids)`` -> ``(shared, items)`` with one item per id, in order.

    ``process(ids) -> (shared, items)`` must return one item per id; ``shared`` (e.g. the
    model/index versions that answered) is given to every request of the batch.
    """

    def __init__(
        self,
        process: Callable[[list[int]], tuple[Shared, Sequence[Item]]],
        max_batch_ids: int = 2_000,
        max_wait_ms: float = 2.0,
        shared_errors: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.process = process
        self.shared_errors = shared_errors
        self.max_batch_ids = max_batch_ids
        self.max_wait_s = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Pending[Shared, Item]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_worker(self) -> asyncio.Queue[_Pending[Shared, Item]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        return self._queue

    async def submit(self, ids: list[int]) -> tuple[Shared, list[Item]]:
        queue = self._ensure_worker()
        future: asyncio.Future[tuple[Any, list[Any]]] = asyncio.get_running_loop().create_future()
        await queue.put(_Pending(list(ids), future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Pending[Shared, Item]]) -> None:
        while True:
            first = await queue.get()
            batch = [first]
            size = len(first.ids)
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch_ids:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    # Still take whatever is already queued: free batching under load.
                    try:
                        pending = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                else:
                    try:
                        pending = await asyncio.wait_for(queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                batch.append(pending)
                size += len(pending.ids)
            await self._execute(batch)

    async def _execute(self, batch: list[_Pending[Shared, Item]]) -> None:
        all_ids = [i for pending in batch for i in pending.ids]
        try:
            shared, items = await anyio.to_thread.run_sync(self.process, all_ids)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, self.shared_errors):
                # Someone's input broke the merged call: find out whose, one request at a time.
                for pending in batch:
                    await self._execute([pending])
                return
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except BaseException as exc:  # cancellation: every waiting caller learns of it
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            raise
        start = 0
        for pending in batch:
            end = start + len(pending.ids)
            if not pending.future.done():
                pending.future.set_result((shared, list(items[start:end])))
            start = end
