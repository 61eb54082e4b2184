"""`run_pipeline` in-process with a fake estimator: order, failures in every stage,
back-pressure, interrupts and per-frame timings. No model and no shared data needed.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from aepose_cli.engines.single import run_pipeline
from aepose_cli.errors import InputError
from aepose_cli.types import STAGES, FrameResult, WorkItem


@dataclass
class _Config:
    batch_size: int = 3


class _FakeEngine:
    """prepare: the image's first pixel is its id; infer_prepared: maps = ids, batches logged."""

    def __init__(self, fail_prepare=(), fail_network_at=None) -> None:
        self.batches: list[list[int]] = []
        self.fail_prepare = set(fail_prepare)
        self.fail_network_at = fail_network_at

    def prepare(self, image):
        ident = int(image[0, 0, 0])
        if ident in self.fail_prepare:
            raise ValueError(f"item {ident}: cannot prepare")
        return ("geometry", ident), ident

    def infer_prepared(self, prepared):
        ids = [inputs for _geometry, inputs in prepared]
        self.batches.append(ids)
        if self.fail_network_at is not None and self.fail_network_at in ids:
            raise RuntimeError("network broke")
        return ids


class _FakeEstimator:
    """`before_grouping(index)` runs in the grouping worker before item `index` is grouped;
    `grouped` is the order in which the items' grouping finished."""

    def __init__(self, batch_size=3, before_grouping=None, fail_group=(), **engine_kw) -> None:
        self.config = _Config(batch_size)
        self.engine = _FakeEngine(**engine_kw)
        self.before_grouping = before_grouping or (lambda index: None)
        self.fail_group = set(fail_group)
        self.grouped: list[int] = []

    def result_from_maps(self, maps, index, *, source="", timestamp=None):
        self.before_grouping(index)
        if maps in self.fail_group:
            raise InputError(f"item {maps}: cannot group")
        self.grouped.append(index)
        return FrameResult(index, (1, 1), [], source=source, timestamp=timestamp, timings={"grouping": 0.001})


@dataclass
class _Sink:
    seen: list[int] = field(default_factory=list)
    results: list[FrameResult] = field(default_factory=list)
    fail_at: int | None = None
    interrupt_at: int | None = None
    delay: float = 0.0

    def write(self, item, image, result):
        if item.index == self.fail_at:
            raise OSError("disk full")
        if item.index == self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(self.delay)
        result.timings["draw"] = 0.002
        self.seen.append(item.index)
        self.results.append(result)


def _image(ident: int) -> np.ndarray:
    return np.full((1, 1, 3), ident, dtype=np.uint8)


def _items(n, fail_load=(), pulled=None):
    for i in range(n):
        if pulled is not None:
            pulled.append(i)

        def load(i=i):
            if i in fail_load:
                raise InputError(f"item {i}: unreadable")
            return _image(i)

        yield WorkItem(index=i, key=f"k{i}", load=load, timestamp=i / 10)


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aepose-")]


def test_results_leave_in_source_order_however_grouping_finishes():
    # Each even item's grouping waits until the next item's is done: with two grouping workers
    # the pool finishes 1 before 0, 3 before 2... (each pair is in the pool's queue together).
    done = {i: threading.Event() for i in range(20)}

    def odd_first(index):
        if index % 2 == 0 and not done[index + 1].wait(timeout=60):  # a hang guard only
            raise AssertionError(f"item {index + 1} was never grouped")

    est = _FakeEstimator(batch_size=4, before_grouping=odd_first)
    real = est.result_from_maps

    def grouped_then_flagged(maps, index, **where):
        result = real(maps, index, **where)
        done[index].set()
        return result

    est.result_from_maps = grouped_then_flagged
    sink = _Sink()
    times = run_pipeline(_items(20), est, sink, grouping_workers=2)
    assert est.grouped == [i ^ 1 for i in range(20)]  # finished out of order: 1, 0, 3, 2...
    assert sink.seen == list(range(20))
    assert times.items == 20 and times.failures == []
    assert [r.timestamp for r in sink.results] == [i / 10 for i in range(20)]


def test_batches_are_consecutive_and_full_whatever_the_timing():
    est = _FakeEstimator(batch_size=3)
    run_pipeline(_items(10), est, _Sink())
    assert est.engine.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_failures_in_load_prepare_and_grouping_are_reported_in_order_and_skip_only_their_item():
    est = _FakeEstimator(batch_size=2, fail_prepare={4}, fail_group={7})
    sink = _Sink()
    progress = []
    times = run_pipeline(_items(9, fail_load={1}), est, sink, on_progress=progress.append)
    assert sink.seen == [0, 2, 3, 5, 6, 8]
    assert times.failures == [
        ("k1", "item 1: unreadable"),
        ("k4", "item 4: cannot prepare"),
        ("k7", "item 7: cannot group"),
    ]
    assert times.items == 9 and sum(progress) == 9
    # A failed item never reaches the network.
    assert [i for batch in est.engine.batches for i in batch] == [0, 2, 3, 5, 6, 7, 8]


def test_a_failing_sink_stops_the_run_and_its_error_surfaces():
    sink = _Sink(fail_at=5)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline(_items(1000), _FakeEstimator(), sink)
    assert sink.seen == [0, 1, 2, 3, 4]
    assert _pipeline_threads() == []


def test_a_failing_network_stops_the_run_and_its_error_surfaces():
    pulled: list[int] = []
    with pytest.raises(RuntimeError, match="network broke"):
        run_pipeline(_items(1000, pulled=pulled), _FakeEstimator(fail_network_at=7), _Sink())
    assert len(pulled) < 100  # the reader stopped too
    assert _pipeline_threads() == []


def test_a_source_that_breaks_keeps_the_items_before_it_and_raises():
    def items():
        yield from _items(5)
        raise InputError("stream broke")

    sink = _Sink()
    with pytest.raises(InputError, match="stream broke"):
        run_pipeline(items(), _FakeEstimator(batch_size=2), sink)
    assert sink.seen == [0, 1, 2, 3, 4]


def test_back_pressure_bounds_how_far_the_reader_runs_ahead():
    pulled: list[int] = []
    sink = _Sink(delay=0.005)
    high_water = []

    def on_progress(_n):
        high_water.append(len(pulled) - len(sink.seen))

    est = _FakeEstimator(batch_size=2)
    run_pipeline(_items(150, pulled=pulled), est, sink, on_progress=on_progress, queue_size=4, grouping_workers=2)
    assert sink.seen == list(range(150))
    # Two queues of 4, one batch in the network thread, one item in the reader and writer each.
    bound = 4 + 4 + 2 + 2
    assert max(high_water) <= bound, max(high_water)


def test_an_interrupt_in_the_writer_ends_the_run_promptly_without_stray_threads():
    pulled: list[int] = []
    sink = _Sink(interrupt_at=3)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_items(10**6, pulled=pulled), _FakeEstimator(), sink)
    assert time.perf_counter() - t0 < 10
    assert sink.seen == [0, 1, 2]
    assert len(pulled) < 100
    assert _pipeline_threads() == []


def test_an_interrupt_in_the_network_thread_ends_the_run_without_stray_threads():
    counter = itertools.count()

    def on_batch(prepared):
        if next(counter) == 2:
            raise KeyboardInterrupt
        return [inputs for _g, inputs in prepared]

    est = _FakeEstimator()
    est.engine.infer_prepared = on_batch
    sink = _Sink()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_items(10**6), est, sink)
    assert sink.seen == list(range(6))  # the two batches before the interrupt were written
    assert _pipeline_threads() == []


def test_every_result_carries_its_stage_timings_and_the_totals_are_their_sums():
    sink = _Sink()
    times = run_pipeline(_items(7), _FakeEstimator(batch_size=3), sink)
    for result in sink.results:
        assert set(result.timings) == {"decode", "preprocess", "network", "grouping", "draw"}
        assert all(v >= 0 for v in result.timings.values())
        assert list(result.timings) == [s for s in STAGES if s in result.timings]  # pipeline order
    for stage in ("decode", "preprocess", "network", "grouping", "draw"):
        assert times.totals[stage] == pytest.approx(sum(r.timings[stage] for r in sink.results))
    assert times.totals["grouping"] == pytest.approx(0.007)
    assert times.totals["draw"] == pytest.approx(0.014)


def test_bytes_in_flight_are_bounded_not_only_the_item_count():
    """Large images: the reader waits while the items handed on hold more than the budget
    (issue 8: four big images in a folder held ~20 decoded images)."""
    big = 40 << 20
    live = {"now": 0, "max": 0}
    lock = threading.Lock()

    def items(n):
        for i in range(n):
            def load(i=i):
                with lock:
                    live["now"] += 1
                    live["max"] = max(live["max"], live["now"])
                image = np.empty((big // 3, 1, 3), dtype=np.uint8)  # pages never touched
                image[0, 0, 0] = i
                return image

            yield WorkItem(index=i, key=f"k{i}", load=load)

    class _Releasing(_Sink):
        def write(self, item, image, result):
            super().write(item, image, result)
            with lock:
                live["now"] -= 1

    def peak(budget):
        live.update(now=0, max=0)
        sink = _Releasing(delay=0.01)
        run_pipeline(items(12), _FakeEstimator(batch_size=2), sink, memory_budget=budget)
        assert sink.seen == list(range(12))
        return live["max"]

    # 100 MB: two 40 MB items in flight (a whole batch), plus the one the reader holds waiting.
    assert peak(100 << 20) <= 3
    # The item-count bound alone lets many more through: the budget is what stops them.
    assert peak(1 << 40) > 4
