"""Dynamic batching: requests for one model queue up, are stacked on dim 0, run once, split back.

Triton's semantics: `max_batch_size` counts rows, not requests; `max_queue_delay` is how long the
oldest request may wait for company. Requests are only stacked when every input's non-batch
dimensions (and the set of inputs sent) agree, so a batch is always a plain concatenation; a
request that does not fit waits for the next batch, in arrival order. If a stacked batch fails,
each of its requests is re-run alone so that one bad request cannot fail its neighbours.

Each model instance owns one executor thread, so the event loop never runs model code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from modelplane_runtime.backends import RunResult
from modelplane_runtime.errors import unavailable
from modelplane_runtime.stats import ModelStats

log = logging.getLogger("modelplane.runtime.batching")

Outputs = dict[str, np.ndarray]
Result = Outputs | BaseException


class Pending:
    __slots__ = ("enqueued_ns", "future", "inputs", "key", "rows")

    def __init__(
        self, inputs: dict[str, np.ndarray], rows: int, key: Hashable, future: asyncio.Future[Outputs]
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.enqueued_ns = time.perf_counter_ns()


def _split(outputs: Outputs, batch: list[Pending]) -> list[Result]:
    total = sum(p.rows for p in batch)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise RuntimeError(
                f"output {name!r} has shape {list(array.shape)}; a batched model must return "
                f"{total} rows (one per input row)"
            )
    results: list[Result] = []
    offset = 0
    for pending in batch:
        end = offset + pending.rows
        results.append({name: array[offset:end] for name, array in outputs.items()})
        offset = end
    return results


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Scheduler:
    """The queue and executor threads of one served model version."""

    def __init__(
        self,
        name: str,
        run: Callable[[dict[str, np.ndarray]], RunResult],
        stats: ModelStats,
        *,
        max_rows: int,
        delay_us: int,
        instances: int,
        max_queue: int,
    ) -> None:
        self._name = name
        self._run = run
        self._stats = stats
        self._max_rows = max_rows  # 0: no batching across requests
        self._delay_ns = delay_us * 1000
        self._max_queue = max_queue
        self._queue: deque[Pending] = deque()
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}-{i}")
            for i in range(instances)
        ]
        self._free: list[ThreadPoolExecutor] = list(self.executors)
        self._wakeup: asyncio.Future[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name=f"batcher-{self._name}")

    @property
    def busy(self) -> bool:
        return bool(self._queue or self._running)

    def submit(self, inputs: dict[str, np.ndarray], rows: int, key: Hashable) -> asyncio.Future[Outputs]:
        if self._closing:
            raise unavailable(f"model {self._name!r} is unloading")
        if self._max_queue and len(self._queue) >= self._max_queue:
            raise unavailable(f"model {self._name!r} has {len(self._queue)} requests queued (max_queue_size)")
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(inputs, rows, key, future))
        self._stats.pending += 1
        self._wake()
        return future

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None:
            self._wakeup = None
            if not waiter.done():
                waiter.set_result(None)

    async def _sleep_until_woken(self, timeout_ns: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._wakeup = waiter
        handle = None
        if timeout_ns is not None:
            handle = loop.call_later(timeout_ns / 1e9, _resolve, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            if self._wakeup is waiter:
                self._wakeup = None

    def _take(self, batch: list[Pending], rows: int) -> int:
        """Move queued requests that fit (same key, rows within the limit) into the batch."""
        queue = self._queue
        key = batch[0].key
        kept: deque[Pending] = deque()
        while queue and rows < self._max_rows:
            pending = queue.popleft()
            if pending.future.done():  # cancelled by its client while queued
                self._stats.pending -= 1
                continue
            if pending.key == key and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        if kept:
            kept.extend(queue)
            self._queue = kept
        return rows

    async def _schedule(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._sleep_until_woken()
                continue
            if not self._free:
                await self._sleep_until_woken()
                continue
            first = self._queue.popleft()
            if first.future.done():
                self._stats.pending -= 1
                continue
            batch = [first]
            rows = first.rows
            if self._max_rows:
                rows = self._take(batch, rows)
                deadline = first.enqueued_ns + self._delay_ns
                while rows < self._max_rows and not self._closing:
                    remaining = deadline - time.perf_counter_ns()
                    if remaining <= 0:
                        break
                    await self._sleep_until_woken(remaining)
                    rows = self._take(batch, rows)
            executor = self._free.pop()
            task = asyncio.get_running_loop().create_task(self._execute(executor, batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, executor: ThreadPoolExecutor, batch: list[Pending], rows: int) -> None:
        started = time.perf_counter_ns()
        self._stats.pending -= len(batch)
        try:
            results, input_ns, infer_ns, output_ns = await asyncio.get_running_loop().run_in_executor(
                executor, self._run_batch, batch
            )
        except BaseException as exc:  # the executor itself failed (shut down): fail the batch
            results, input_ns, infer_ns, output_ns = [exc] * len(batch), 0, 0, 0
        finally:
            self._free.append(executor)
            self._wake()
        queue_ns = sum(started - p.enqueued_ns for p in batch)
        self._stats.executed(
            rows if self._max_rows else max(rows, 1), len(batch), queue_ns, input_ns, infer_ns, output_ns
        )
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def _run_batch(self, batch: list[Pending]) -> tuple[list[Result], int, int, int]:
        """On the executor thread: stack, run, split; isolate failures by re-running alone."""
        start = time.perf_counter_ns()
        try:
            if len(batch) == 1:
                outputs, input_ns, infer_ns, output_ns = self._run(batch[0].inputs)
                return [outputs], input_ns, infer_ns, output_ns
            stacked = {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}
            stack_ns = time.perf_counter_ns() - start
            outputs, input_ns, infer_ns, output_ns = self._run(stacked)
            split_start = time.perf_counter_ns()
            results = _split(outputs, batch)
            return results, stack_ns + input_ns, infer_ns, output_ns + time.perf_counter_ns() - split_start
        except Exception as exc:
            if len(batch) == 1:
                return [exc], 0, time.perf_counter_ns() - start, 0
            log.warning(
                "batch of %d requests for %r failed (%s); running them one by one",
                len(batch),
                self._name,
                exc,
            )
            alone: list[Result] = []
            for pending in batch:
                try:
                    alone.append(self._run(pending.inputs)[0])
                except Exception as single:
                    alone.append(single)
            return alone, 0, time.perf_counter_ns() - start, 0

    async def close(self, grace_s: float | None = None) -> None:
        """Stop taking requests, finish the queued and running ones, release the threads."""
        self._closing = True
        self._wake()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._task.cancel()
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_s)
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)


def warm_up(
    executors: list[ThreadPoolExecutor],
    run: Callable[[dict[str, np.ndarray]], Any],
    samples: list[dict[str, np.ndarray]],
) -> None:
    """Run each sample once on every instance's own thread (blocking; called while loading)."""
    for executor in executors:
        for sample in samples:
            executor.submit(run, sample).result()
