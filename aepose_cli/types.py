"""Typed values that cross module boundaries, and the two small protocols every layer shares.

One person (`Pose`), one frame's result (`FrameResult`), one image's aggregated network maps
(`AggregatedMaps`), one item of work (`WorkItem`), what a run's stages cost (`StageTimes`,
`STAGES`), where results go (`Sink`) and where a long run shows how far it is (`Progress`).
They live here, below every stage, so that grouping need not import the network module for its
input type, nor the console the pipeline for its timings.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from .preprocess import ImageGeometry

# Every stage a frame can pass through, in order; `FrameResult.timings` uses these names.
STAGES = ("decode", "preprocess", "network", "grouping", "draw", "encode")


@dataclass(frozen=True)
class Pose:
    """One person: keypoints `[K, 3]` (x, y, score) in original-image pixels and a person score.

    The person score is the reference's (mean heatmap value of the grouped joints, computed
    before refine, in `HeatmapParser.parse`). `track_id` is set only by video tracking.
    """

    keypoints: np.ndarray
    score: float
    track_id: int | None = None

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """[x, y, w, h] over all K keypoints, as the reference's result file has it."""
        xs, ys = self.keypoints[:, 0], self.keypoints[:, 1]
        x0, y0 = float(xs.min()), float(ys.min())
        return x0, y0, float(xs.max()) - x0, float(ys.max()) - y0

    @property
    def area(self) -> float:
        _, _, w, h = self.bbox
        return w * h

    def with_track_id(self, track_id: int | None) -> Pose:
        return replace(self, track_id=track_id)


@dataclass
class FrameResult:
    """What one frame (or image) produced, plus where it came from and what each stage cost."""

    index: int
    image_size: tuple[int, int]  # (width, height) of the original image
    poses: list[Pose]
    source: str = ""
    timestamp: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class AggregatedMaps:
    """Aggregated maps of one image, on the engine's device, plus its geometry: what grouping
    consumes (`inference.aggregate_outputs` makes them)."""

    heatmaps: torch.Tensor  # [K, Hb, Wb] float32
    tags: torch.Tensor  # [K, Hb, Wb, L] float32, L = 2 with flip test ([..., 0] original)
    geometry: ImageGeometry
    # The same tags before projection, `[K, h, w, L]` at heatmap resolution: `tags` is their
    # bilinear upsampling, which lets grouping bound tags per region cheaply.
    tags_lowres: torch.Tensor | None = None


@dataclass
class WorkItem:
    """One image or frame to process. `load` runs where the engine decodes (a reader thread, a
    Ray task), so it must not depend on the caller's thread."""

    index: int
    key: str
    load: Callable[[], np.ndarray]
    timestamp: float | None = None
    extra: Any = None


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over items (stages overlap, so they exceed wall time).

    The totals are the sums of the finished items' `FrameResult.timings`.
    """

    totals: dict[str, float] = field(default_factory=dict)
    items: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    wall: float = 0.0
    # Seconds of the run spent outside any item (the Ray engine: starting or joining the
    # cluster, shipping the model, waiting for the first result), by name; part of `wall`.
    overhead: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def merge(self, other: StageTimes) -> None:
        """Add another run's items, failures, wall time and stage totals to these."""
        self.items += other.items
        self.wall += other.wall
        self.failures += other.failures
        for stage, seconds in other.totals.items():
            self.add(stage, seconds)


class Sink(Protocol):
    """Where results go (drawn images, video, JSON); an engine calls it in item order, from one
    thread at a time.

    A sink that draws or encodes records those seconds in `result.timings` ("draw", "encode")
    before it writes the result anywhere, so JSON lines carry every stage of their frame.
    """

    def write(self, item: WorkItem, image: np.ndarray, result: FrameResult) -> None: ...


class Progress(Protocol):
    """Where a long run shows how far it is: a model download (bytes), a folder (images), a
    video (frames), a run of videos. The library draws nothing by default (`None` wherever a
    `progress` is taken); the command line hands in its console bars (`cli/console.py`).

    `task` opens one counter of `total` units (None: unknown) and yields the function that
    advances it; the counter is closed when the block ends. Counters may nest (the current
    video's frames inside the run's videos). `advance` may be called from any one thread.
    """

    def task(self, description: str, total: float | None, unit: str) -> AbstractContextManager[Callable[[float], None]]: ...
