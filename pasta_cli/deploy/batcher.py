"""Items of requests that arrive close together share one forward pass (dynamic batching).

A request's items enter one bounded queue together or not at all (a full queue is the caller's
503). One loop takes the first waiting item, gathers more until `max_batch` items or `max_wait_s`
after the first, and runs them in the single inference thread, so forward passes never overlap
(and adding or removing a task, run in the same thread, never meets one half-way). Each item's
result returns to its own request; items of different tasks mix freely (MultiTaskPasta).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class QueueFull(Exception):
    """The queue cannot take a request's items now; the caller should answer 503 and retry later."""


class Batcher:
    def __init__(self, run: Callable[[list], list], max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] = lambda size: None):
        self.run, self.on_batch = run, on_batch  # run(items) -> one result (or exception) per item
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pasta-inference")
        self.queue: asyncio.Queue | None = None
        self._loop_task = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def waiting(self) -> int:
        return 0 if self.queue is None else self.queue.qsize()

    async def call(self, fn: Callable, *args):
        """Run `fn` in the inference thread, between two batches (adding or removing a task)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, items: list) -> list:
        """Every item's result, in order; QueueFull if the queue cannot take them all now."""
        if self.waiting() + len(items) > self.max_queue:
            raise QueueFull(f"the queue holds {self.waiting()} of at most {self.max_queue} items")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self.queue.put_nowait((item, future))
        return await asyncio.gather(*futures)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
            batch = [(item, f) for item, f in batch if not f.done()]  # a gone client's items are skipped
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001 - every waiting request gets the failure, the loop goes on
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
