"""The single-process engine: decoding, the network, grouping and writing overlap in threads.

    reader thread ──prepared──▶ network (this thread, batched) ──maps──▶ grouping pool
                                                                             │ (futures, in order)
                                                         writer thread ◀─────┘ draw, encode, JSON

Queues are bounded, so the slowest stage sets the pace and memory stays flat however long the
input is. Besides the item counts, the decoded images and network inputs in flight are bounded
in bytes (`memory_budget`): the reader waits before taking another item while the items it has
handed on but the writer has not finished hold more than that, so four 100-megapixel images
never sit in the queues together. At least `batch_size` items are always admitted, so a batch
can fill (and which items share a batch never depends on timing). Per-item failures (an
unreadable image, say) travel down the same queues as results, so they are reported in order and
never stop the other items. What each stage does to an item is `engines.stages`, shared with the
Ray engine; `SingleRunner` is this engine's face to a job (`jobs.base.Runner`).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import AeposeError
from ..types import Progress, Sink, StageTimes, WorkItem
from . import stages

if TYPE_CHECKING:
    from ..estimator import PoseEstimator

_DONE = object()

# Bytes of decoded images and network inputs that may be in flight between the reader and the
# writer (a whole batch is admitted whatever its size).
DEFAULT_MEMORY_BUDGET = 1 << 30


class SingleRunner:
    """This process as the runner of a job (`jobs.base.Runner`): `run_pipeline` around one
    estimator for a stream of items, or a job function called on each task in turn."""

    def __init__(self, estimator: PoseEstimator) -> None:
        self.estimator = estimator
        self.keypoints = estimator.keypoints
        self.config = estimator.config
        self.description = str(estimator.config.device)

    def __enter__(self) -> SingleRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def run(self, items: Iterable[WorkItem], sink: Sink, *, on_progress: Callable[[int], None] | None = None, keep_images: bool = True) -> StageTimes:
        """Every item through the stages into `sink`, in item order (see `run_pipeline`)."""
        return run_pipeline(items, self.estimator, sink, on_progress=on_progress)

    def map(self, fn: Callable[[SingleRunner, Any, Progress | None], Any], tasks: Sequence[Any], *, progress: Progress | None = None) -> Iterator[tuple[int, Any]]:
        """`fn(self, task, progress)` for each task, one after the other, in this process; yields
        (position, answer), or (position, the AeposeError that stopped that task)."""
        for position, task in enumerate(tasks):
            try:
                answer = fn(self, task, progress)
            except AeposeError as error:
                answer = error
            yield position, answer


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
                prep = stages.prepare(item, estimator.engine.prepare, started=t0)
                nbytes = _nbytes(prep)
                if not budget.acquire(nbytes, stop):
                    break
                _put(prepared_q, (item, prep, nbytes), stop)
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
                item, prep, nbytes, future = entry
                if future is not None:
                    future.result()  # grouping done (its failure is kept in `prep`)
                stages.deliver(item, prep, sink, times, on_progress)
                budget.release(nbytes)
                del item, prep, future, entry
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
        for batch in stages.consecutive(_taken(prepared_q), batch_size):
            # Network and aggregation here, on this thread, in one call per batch.
            stages.forward([prep for _, prep, _ in batch], estimator.engine.infer_prepared)
            for item, prep, nbytes in batch:
                future: Future | None = None
                if prep.error is None:
                    future = pool.submit(stages.group, prep, prep.outputs, estimator.result_from_maps)
                    prep.outputs = None
                _put(written_q, (item, prep, nbytes, future), stop)
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


def _taken(q: queue.Queue) -> Iterator[Any]:
    """The reader's entries, in order, until it is done."""
    while True:
        entry = q.get()
        if entry is _DONE:
            return
        yield entry


def _nbytes(prep: stages.Prepared) -> int:
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
