"""The per-item stages every engine runs, written once.

    item ──prepare──▶ Prepared ──forward (a batch)──▶ maps or raw outputs ──[aggregate]+group──▶
         result ──deliver──▶ the sink, in item order

An engine decides where each stage runs and how items travel between them: the single engine
(`engines.single`) runs prepare in a reader thread, forward in its own thread, grouping in a
pool and deliver in a writer thread; the Ray engine (`engines.ray`) runs prepare and grouping as
Ray tasks and forward on actors, and delivers on the driver. What a stage does to an item, what
it times and how a failure is named is decided here, so both engines give the same results, the
same failure lines and the same stage table.

Failures stay in place: an item that cannot be decoded, prepared or grouped carries its one-line
reason (`Prepared.error`) to the sink's turn, where it is counted instead of written, so it never
stops the others and never changes which items share a network batch (`consecutive`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..errors import AeposeError, InputError, UnnamedInputError
from ..types import FrameResult, Sink, StageTimes, WorkItem

T = TypeVar("T")


@dataclass
class Prepared:
    """One item on its way through the stages: decoded image, network inputs, then the network's
    answer and the result, or the one-line reason it failed; the seconds each stage took."""

    index: int
    key: str
    timestamp: float | None = None
    image: np.ndarray | None = None
    geometry: Any = None
    inputs: Any = None
    outputs: Any = None  # what `forward`'s function gave for this item (maps or raw outputs)
    result: FrameResult | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def consecutive(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive items in batches of exactly `size` (the last may be shorter).

    Which items share a batch must not depend on timing: a batched convolution rounds
    differently (~1e-6) from another batch composition, so taking "whatever is ready" made the
    same command give slightly different poses from run to run. Both engines batch this way,
    failed items keeping their place, so they give the same numbers to the bit.
    """
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepare(item: WorkItem, prepare_image: Callable[[np.ndarray], tuple[Any, Any]], *, started: float | None = None) -> Prepared:
    """Decode (`item.load`) and preprocess one item, timing both; a failure is kept in place,
    named by the item's key when the error could not name its file. `started`: when decoding
    began, if it began before the item was in hand (pulling a video frame decodes it)."""
    prep = Prepared(item.index, item.key, item.timestamp)
    t0 = time.perf_counter() if started is None else started
    try:
        image = item.load()
        t1 = time.perf_counter()
        prep.timings["decode"] = t1 - t0
        prep.geometry, prep.inputs = prepare_image(image)
        prep.timings["preprocess"] = time.perf_counter() - t1
        prep.image = image
    except (AeposeError, OSError, ValueError) as exc:
        if isinstance(exc, UnnamedInputError):
            exc = InputError(f"{item.key}: {exc}")  # name the image it refused
        prep.error = str(exc)
    return prep


def forward(batch: Sequence[Prepared], network: Callable[[list[tuple[Any, Any]]], list]) -> None:
    """The network on a batch's prepared items (`network` takes their (geometry, inputs) and
    returns one answer each, in order), all in one call; each item gets its answer in
    `outputs` and its share of the call's seconds as "network". The inputs are let go."""
    good = [p for p in batch if p.error is None]
    if not good:
        return
    t0 = time.perf_counter()
    answers = network([(p.geometry, p.inputs) for p in good])
    share = (time.perf_counter() - t0) / len(good)
    for prep, answer in zip(good, answers):
        prep.outputs = answer
        prep.inputs = None
        prep.timings["network"] = share


def aggregate(prep: Prepared, aggregate_outputs: Callable[[Any, Any], Any]) -> Any:
    """Raw network outputs into aggregated maps (flip and scales on the base canvas), counted as
    network time as when the network's own call aggregates them."""
    t0 = time.perf_counter()
    maps = aggregate_outputs(prep.geometry, prep.outputs)
    prep.outputs = None
    prep.timings["network"] = prep.timings.get("network", 0.0) + time.perf_counter() - t0
    return maps


def group(prep: Prepared, maps: Any, result_from_maps: Callable[..., FrameResult]) -> Prepared:
    """People from an item's aggregated maps (`result_from_maps(maps, index, source=,
    timestamp=)`, which times itself as "grouping"); a failure is kept in place."""
    try:
        prep.result = result_from_maps(maps, prep.index, source=prep.key, timestamp=prep.timestamp)
    except AeposeError as exc:
        prep.error = str(exc)
    return prep


def deliver(item: WorkItem, prep: Prepared, sink: Sink, times: StageTimes, on_progress: Callable[[int], None] | None) -> None:
    """An item's turn at the sink, in item order: its result written (the item's own stages
    first in its timings, then whatever the sink adds) or its failure counted; progress by one."""
    if prep.error is not None:
        times.failures.append((item.key, prep.error))
    else:
        result = prep.result
        result.timings = {**prep.timings, **result.timings}
        sink.write(item, prep.image, result)
        for stage, seconds in result.timings.items():
            times.add(stage, seconds)
    times.items += 1
    if on_progress is not None:
        on_progress(1)
