"""Streaming orchestration: decoding, the network, grouping and writing overlap.

    reader thread ──prepared──▶ network (this thread, batched) ──maps──▶ grouping pool
                                                                             │ (futures, in order)
                                                         writer thread ◀─────┘ draw, encode, JSON

Queues are bounded, so the slowest stage sets the pace and memory stays flat however long the
input is. Besides the item counts, the decoded images and network inputs in flight are bounded
in bytes (`memory_budget`): the reader waits before taking another item while the items it has
handed on but the writer has not finished hold more than that, so four 100-megapixel images
never sit in the queues together. At least `batch_size` items are always admitted, so a batch
can fill (and which items share a batch never depends on timing). Per-item failures (an unreadable image, say) travel down the same queues as results,
so they are reported in order and never stop the other items.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AeposeError, InputError, UnnamedInputError
from .estimator import PoseEstimator
from .types import FrameResult, Sink, StageTimes, WorkItem

_DONE = object()

# Bytes of decoded images and network inputs that may be in flight between the reader and the
# writer (a whole batch is admitted whatever its size).
DEFAULT_MEMORY_BUDGET = 1 << 30


@dataclass
class _Prepared:
    item: WorkItem
    image: np.ndarray | None = None
    geometry: Any = None
    inputs: Any = None
    error: BaseException | None = None
    timings: dict[str, float] = field(default_factory=dict)
    nbytes: int = 0


def run_pipeline(
    items: Iterable[WorkItem],
    estimator: PoseEstimator,
    sink: Sink,
    *,
    on_progress: Callable[[int], None] | None = None,
    grouping_workers: int = 2,
    queue_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> StageTimes:
    """Process every item; returns per-stage times and the (key, reason) of failed items."""
    batch_size = estimator.config.batch_size
    budget = _ByteBudget(memory_budget, min_items=batch_size)
    qsize = queue_size or max(4, 2 * batch_size)
    prepared_q: queue.Queue = queue.Queue(maxsize=qsize)
    written_q: queue.Queue = queue.Queue(maxsize=qsize)
    times = StageTimes()
    stop = threading.Event()
    errors: list[BaseException] = []
    start = time.perf_counter()

    def reader() -> None:
        try:
            iterator = iter(items)
            while not stop.is_set():
                t0 = time.perf_counter()
                # Pulling the next item may decode (video frames); count it as decoding.
                item = next(iterator, None)
                if item is None:
                    break
                prep = _Prepared(item)
                try:
                    prep.image = item.load()
                    t1 = time.perf_counter()
                    prep.timings["decode"] = t1 - t0
                    prep.geometry, prep.inputs = estimator.engine.prepare(prep.image)
                    prep.timings["preprocess"] = time.perf_counter() - t1
                except (AeposeError, OSError, ValueError) as exc:
                    if isinstance(exc, UnnamedInputError):
                        exc = InputError(f"{item.key}: {exc}")  # name the image it refused
                    prep.error = exc
                    prep.image = prep.inputs = None
                prep.nbytes = _nbytes(prep)
                if not budget.acquire(prep.nbytes, stop):
                    break
                _put(prepared_q, prep, stop)
        except BaseException as exc:  # a source that breaks (e.g. a video stream) ends the run
            errors.append(exc)
        finally:
            _put(prepared_q, _DONE, stop, force=True)

    def writer() -> None:
        try:
            while True:
                entry = written_q.get()
                if entry is _DONE:
                    return
                prep, future = entry
                error = prep.error
                if error is None:
                    try:
                        result: FrameResult = future.result()
                    except AeposeError as exc:
                        error = exc
                if error is not None:
                    times.failures.append((prep.item.key, str(error)))
                else:
                    # The frame's own stages in pipeline order, then whatever the sink adds.
                    result.timings = {**prep.timings, **result.timings}
                    sink.write(prep.item, prep.image, result)
                    for stage, seconds in result.timings.items():
                        times.add(stage, seconds)
                budget.release(prep.nbytes)
                del prep, future, entry
                times.items += 1
                if on_progress is not None:
                    on_progress(1)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            budget.wake()
            _drain(written_q)

    reader_thread = threading.Thread(target=reader, name="aepose-reader", daemon=True)
    writer_thread = threading.Thread(target=writer, name="aepose-writer", daemon=True)
    reader_thread.start()
    writer_thread.start()
    pool = ThreadPoolExecutor(max_workers=grouping_workers, thread_name_prefix="aepose-group")
    try:
        for batch in _batches(prepared_q, batch_size, stop):
            good = [p for p in batch if p.error is None]
            maps_list = []
            if good:
                t0 = time.perf_counter()
                maps_list = estimator.engine.infer_prepared([(p.geometry, p.inputs) for p in good])
                share = (time.perf_counter() - t0) / len(good)  # each image's share of its batch
                for p in good:
                    p.timings["network"] = share
            maps_iter = iter(maps_list)
            for prep in batch:
                future: Future | None = None
                if prep.error is None:
                    future = pool.submit(
                        estimator.result_from_maps, next(maps_iter), prep.item.index,
                        source=prep.item.key, timestamp=prep.item.timestamp,
                    )
                _put(written_q, (prep, future), stop)
            if stop.is_set():
                break
    except BaseException:
        stop.set()
        raise
    finally:
        _put(written_q, _DONE, stop, force=True)
        writer_thread.join()
        stop.set()
        budget.wake()
        _drain(prepared_q)
        reader_thread.join(timeout=5)
        pool.shutdown(wait=True)
        times.wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return times


def _nbytes(prep: _Prepared) -> int:
    total = int(getattr(prep.image, "nbytes", 0))
    for tensor in prep.inputs if isinstance(prep.inputs, (list, tuple)) else ():
        if hasattr(tensor, "element_size"):
            total += tensor.element_size() * tensor.nelement()
    return total


class _ByteBudget:
    """Bytes in flight, bounded: `acquire` waits while more than `limit` are held, unless fewer
    than `min_items` items are (so a batch can always fill and the pipeline never deadlocks)."""

    def __init__(self, limit: int, min_items: int) -> None:
        self.limit = limit
        self.min_items = min_items
        self.bytes = 0
        self.items = 0
        self.cond = threading.Condition()

    def acquire(self, nbytes: int, stop: threading.Event) -> bool:
        with self.cond:
            while self.items >= self.min_items and self.bytes + nbytes > self.limit:
                if stop.is_set():
                    return False
                self.cond.wait(timeout=0.1)
            self.bytes += nbytes
            self.items += 1
            return True

    def release(self, nbytes: int) -> None:
        with self.cond:
            self.bytes -= nbytes
            self.items -= 1
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


def _batches(q: queue.Queue, size: int, stop: threading.Event) -> Iterator[list[_Prepared]]:
    """Consecutive items in batches of exactly `size` (the last may be shorter).

    Which items share a batch must not depend on timing: a batched convolution rounds
    differently (~1e-6) from another batch composition, so taking "whatever is ready" made the
    same command give slightly different poses from run to run.
    """
    while not stop.is_set():
        batch: list[_Prepared] = []
        while len(batch) < size:
            entry = q.get()
            if entry is _DONE:
                if batch:
                    yield batch
                return
            batch.append(entry)
        yield batch


def _put(q: queue.Queue, value, stop: threading.Event, force: bool = False) -> None:
    while True:
        try:
            q.put(value, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set() and not force:
                return
            if stop.is_set():
                _drain(q)


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
