"""Typed values that cross module boundaries: one person (`Pose`) and one frame's result."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


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
