"""Dynamic batching: requests for one model queue up, are stacked on dim 0, run once, split back.

Triton's semantics: `max_batch_size` counts rows, not requests; `max_queue_delay` is how long the
oldest request may wait for company. Requests are only stacked when every input's non-batch
dimensions (and the set of inputs sent) agree, so a batch is always a plain concatenation; a
request that does not fit waits for the next batch, in arrival order. If a stacked batch fails,
each of its requests is re-run alone so that one bad request cannot fail its neighbours.

Each model instance owns one worker thread, so the event loop never runs model code. The hot
path is kept to one future per request and one thread hand-off per batch: arrivals wake the
scheduler only when it idles or when a filling batch could be completed, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from modelplane_runtime.backends import RunResult
from modelplane_runtime.errors import unavailable
from modelplane_runtime.stats import ModelStats

log = logging.getLogger("modelplane.runtime.batching")

Outputs = dict[str, np.ndarray]
Result = Outputs | BaseException
BatchResult = tuple[list[Result], int, int, int]


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


class Worker:
    """One model instance's thread: runs jobs in order, reports back on the event loop."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, Callable[[Any], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, argument, done = job
            try:
                result = function(argument)
            except BaseException as exc:  # handed to the caller, never lost in this thread
                result = exc
            done(result)

    def submit(self, function: Callable[[Any], Any], argument: Any, done: Callable[[Any], None]) -> None:
        self._jobs.put((function, argument, done))

    def call(self, function: Callable[[Any], Any], argument: Any) -> Any:
        """Run on this thread and wait (used while loading, off the event loop)."""
        finished = threading.Event()
        box: list[Any] = []

        def done(result: Any) -> None:
            box.append(result)
            finished.set()

        self.submit(function, argument, done)
        finished.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def stop(self, join: bool = True) -> None:
        """Ask the thread to end; wait for it when it is idle, so no thread outlives the interpreter."""
        self._jobs.put(None)
        if join:
            self._thread.join()


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


# What the scheduler task is waiting for, which decides whether an arrival wakes it.
_IDLE, _FILLING, _NO_WORKER, _BUSY = "idle", "filling", "no-worker", "busy"


class Scheduler:
    """The queue and worker threads of one served model version."""

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
        self._queued_rows = 0
        self.workers = [Worker(f"model-{name}-{i}") for i in range(instances)]
        self._free: list[Worker] = list(self.workers)
        self._state = _BUSY
        self._rows_wanted = 0  # while filling: queued rows that would complete the batch
        self._wakeup: asyncio.Future[None] | None = None
        self._running = 0
        self._drained: asyncio.Future[None] | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._schedule(), name=f"batcher-{self._name}")

    @property
    def busy(self) -> bool:
        return bool(self._queue or self._running)

    def submit(self, inputs: dict[str, np.ndarray], rows: int, key: Hashable) -> asyncio.Future[Outputs]:
        if self._closing:
            raise unavailable(f"model {self._name!r} is unloading")
        if self._max_queue and len(self._queue) >= self._max_queue:
            raise unavailable(f"model {self._name!r} has {len(self._queue)} requests queued (max_queue_size)")
        assert self._loop is not None
        future: asyncio.Future[Outputs] = self._loop.create_future()
        self._queue.append(Pending(inputs, rows, key, future))
        self._queued_rows += rows or 1
        self._stats.pending += 1
        state = self._state
        if state is _IDLE or (state is _FILLING and self._queued_rows >= self._rows_wanted):
            self._wake()
        return future

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None:
            self._wakeup = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, state: str, timeout_ns: int | None = None) -> None:
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._wakeup = waiter
        self._state = state
        handle = self._loop.call_later(timeout_ns / 1e9, _resolve, waiter) if timeout_ns is not None else None
        try:
            await waiter
        finally:
            self._state = _BUSY
            if handle is not None:
                handle.cancel()
            if self._wakeup is waiter:
                self._wakeup = None

    def _popleft(self) -> Pending:
        pending = self._queue.popleft()
        self._queued_rows -= pending.rows or 1
        return pending

    def _take(self, batch: list[Pending], rows: int) -> int:
        """Move queued requests that fit (same key, rows within the limit) into the batch."""
        key = batch[0].key
        kept: deque[Pending] = deque()
        while self._queue and rows < self._max_rows:
            pending = self._popleft()
            if pending.future.done():  # cancelled by its client while queued
                self._stats.pending -= 1
                continue
            if pending.key == key and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        if kept:
            for pending in kept:
                self._queued_rows += pending.rows or 1
            kept.extend(self._queue)
            self._queue = kept
        return rows

    async def _schedule(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wait(_IDLE)
                continue
            if not self._free:
                await self._wait(_NO_WORKER)
                continue
            first = self._popleft()
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
                    self._rows_wanted = self._max_rows - rows
                    await self._wait(_FILLING, remaining)
                    rows = self._take(batch, rows)
            self._dispatch(self._free.pop(), batch, rows)

    def _dispatch(self, worker: Worker, batch: list[Pending], rows: int) -> None:
        assert self._loop is not None
        started = time.perf_counter_ns()
        self._stats.pending -= len(batch)
        self._running += 1
        loop = self._loop

        def done(result: BatchResult | BaseException) -> None:  # on the worker thread
            loop.call_soon_threadsafe(self._finish, worker, batch, rows, started, result)

        worker.submit(self._run_batch, batch, done)

    def _finish(
        self,
        worker: Worker,
        batch: list[Pending],
        rows: int,
        started: int,
        outcome: BatchResult | BaseException,
    ) -> None:
        self._running -= 1
        self._free.append(worker)
        if self._state is _NO_WORKER:
            self._wake()
        if isinstance(outcome, BaseException):
            results: list[Result] = [outcome] * len(batch)
            input_ns = infer_ns = output_ns = 0
        else:
            results, input_ns, infer_ns, output_ns = outcome
        queue_ns = 0
        for pending in batch:
            queue_ns += started - pending.enqueued_ns
        self._stats.executed(
            rows if self._max_rows else max(rows, 1), len(batch), queue_ns, input_ns, infer_ns, output_ns
        )
        for pending, result in zip(batch, results, strict=True):
            future = pending.future
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if not self._running and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _run_batch(self, batch: list[Pending]) -> BatchResult:
        """On the worker thread: stack, run, split; isolate failures by re-running alone."""
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
        """Stop taking requests, finish the queued and running ones, stop the threads."""
        self._closing = True
        self._wake()
        try:
            if self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            if self._running:
                assert self._loop is not None
                self._drained = self._loop.create_future()
                await asyncio.wait_for(self._drained, grace_s)
        except TimeoutError:
            if self._task is not None:
                self._task.cancel()
        for worker in self.workers:
            # A worker still inside the model (drain deadline passed) is not waited for.
            worker.stop(join=not self._running)


def warm_up(
    workers: list[Worker], run: Callable[[dict[str, np.ndarray]], Any], samples: list[dict[str, np.ndarray]]
) -> None:
    """Run each sample once on every instance's own thread (blocking; called while loading)."""
    for worker in workers:
        for sample in samples:
            worker.call(run, sample)
