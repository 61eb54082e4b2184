"""Temporal extras for video: stable person ids across frames and One-Euro keypoint smoothing.

Both follow mmpose 0.29's `demo/bottom_up_pose_tracking_demo.py` (`--use-oks-tracking`,
`--tracking-thr 0.3`, `--smooth`), so that ids and smoothed keypoints match what that demo
produces on the same per-frame poses.

Tracking (`mmpose/apis/inference_tracking.py: get_track_id`), reproduced rule for rule:

* Each person's box is `[xmin, ymin, xmax, ymax]` where the minima only look at coordinates
  `> 0` (start value 1e10) and the maxima at all of them; its area is the box area (`_get_area`).
* Current persons are visited in their given order. Each one is compared with every still
  unclaimed person of the previous frame, by OKS (`oks_iou` with the keypoint set's sigmas,
  no visibility threshold: all K joints count, whatever their score; float32 scores, first
  maximum wins) or by box IoU. If the best score is strictly above the threshold the person
  inherits that id and the previous person leaves the pool; otherwise it gets the next new id.
* mmpose's `min_keypoints=3` rule: an unmatched person whose keypoints have fewer than 3
  non-zero *y coordinates* (mmpose counts coordinates, not scores) gets id -1 instead of a new
  id. Bottom-up AE output places every joint, so with real models this practically never
  fires; it is kept for parity. mmpose then blanks that person (y = -10, box = 0) and the blanked
  copy stays in the next frame's pool, where it can still absorb a match (the matched person
  then counts as unmatched). The pool here keeps that blanked copy too; the returned `Pose`
  keeps its real keypoints and carries `track_id == -1` so callers can skip it.
* Ids are never reused: one counter per video.

`max_age_frames` > 1 is an extension: persons unmatched in the last frame stay in the pool for
that many frames so a briefly missed detection keeps its id. With the default 1 the pool is
exactly mmpose's (the previous frame's persons).

Smoothing (`mmpose/core/post_processing/temporal_filters/one_euro_filter.py` through
`Smoother` with `configs/_base_/filters/one_euro.py`): one One-Euro filter (Casiez et al. 2012)
per track id over the x, y of all K joints; a track's first frame passes through unchanged.
mmpose advances time by one per frame, so its parameters (min_cutoff 0.004, beta 0.7,
d_cutoff 1.0) are in cycles per *frame*. Here time is the frame timestamp in seconds times the
nominal fps, which is the same thing on constant-rate video and the right thing on VFR video.
mmpose forgets a track's filter as soon as the track misses one frame (`max_missed_frames=0`).
The demo's deprecated `--euro` flag additionally runs the legacy per-track filter inside
`get_track_id` (min_cutoff 1.7, beta 0.3); that double filtering is not reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .keypoints import KeypointSet
from .oks import oks_one_vs_many
from .types import Pose

UNTRACKED = -1
"""Track id of a person with too few placed keypoints (mmpose's `min_keypoints` rule)."""

# mmpose's start value for the box minima when no coordinate is positive.
_NO_POSITIVE_COORDINATE = 1e10
# mmpose's y for the joints of a person it declines to track.
_BLANKED_Y = -10.0


@dataclass(frozen=True)
class _PoolPerson:
    """A person of an earlier frame that current persons may inherit their id from."""

    keypoints: np.ndarray  # [K, 3] float64, as matched against (blanked when untracked)
    box: np.ndarray  # [4] x1, y1, x2, y2 (zeros when untracked)
    area: float
    track_id: int
    frame: int  # the tracker's frame number when this person was seen


def keypoint_box(keypoints: np.ndarray) -> tuple[np.ndarray, float]:
    """mmpose's tracking box and area: minima over positive coordinates only, maxima over all.

    The asymmetry is mmpose's (`_get_area`); it matters for people partly outside the image,
    whose joints the model may place at negative coordinates.
    """
    xs, ys = keypoints[:, 0], keypoints[:, 1]
    x_min = np.min(xs[xs > 0], initial=_NO_POSITIVE_COORDINATE)
    y_min = np.min(ys[ys > 0], initial=_NO_POSITIVE_COORDINATE)
    x_max, y_max = np.max(xs), np.max(ys)
    area = float((x_max - x_min) * (y_max - y_min))
    return np.array([x_min, y_min, x_max, y_max], dtype=np.float64), area


def iou_to_pool(box: np.ndarray, pool_boxes: np.ndarray) -> np.ndarray:
    """Box IoU of one box against N earlier ones (mmpose's `_compute_iou`, union 0 → 1e-5)."""
    x1 = np.maximum(box[0], pool_boxes[:, 0])
    y1 = np.maximum(box[1], pool_boxes[:, 1])
    x2 = np.minimum(box[2], pool_boxes[:, 2])
    y2 = np.minimum(box[3], pool_boxes[:, 3])
    inter = np.maximum(0.0, x2 - x1) * np.maximum(0.0, y2 - y1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    pool_areas = (pool_boxes[:, 2] - pool_boxes[:, 0]) * (pool_boxes[:, 3] - pool_boxes[:, 1])
    union = area + pool_areas - inter
    union = np.where(union == 0, 1e-5, union)
    return inter / union


class PoseTracker:
    """Gives each person a track id that stays the same from frame to frame (one per video).

    Greedy matching against the previous frame, as mmpose 0.29's tracking demo does; see the
    module docstring for the exact rules. Not thread-safe: feed frames in order.
    """

    def __init__(
        self,
        keypoints: KeypointSet,
        *,
        threshold: float = 0.3,
        use_oks: bool = True,
        min_keypoints: int = 3,
        max_age_frames: int = 1,
    ) -> None:
        if max_age_frames < 1:
            raise ValueError("max_age_frames must be at least 1 (1 = previous frame only)")
        self.keypoints = keypoints
        self.threshold = float(threshold)
        self.use_oks = use_oks
        self.min_keypoints = int(min_keypoints)
        self.max_age_frames = int(max_age_frames)
        self._sigmas = np.asarray(keypoints.sigmas, dtype=np.float64)
        self._pool: list[_PoolPerson] = []
        self._next_id = 0
        self._frame = 0

    @property
    def next_id(self) -> int:
        """The id the next new person will get (ids are never reused)."""
        return self._next_id

    def update(self, poses: list[Pose]) -> list[Pose]:
        """Track one frame's poses: the same poses, same order, with `track_id` set."""
        self._frame += 1
        pool = [p for p in self._pool if self._frame - p.frame <= self.max_age_frames]
        tracked: list[Pose] = []
        seen: list[_PoolPerson] = []
        for pose in poses:
            person = self._pool_person(pose)
            inherited = self._claim_best_match(person, pool)
            track_id = inherited if inherited != UNTRACKED else self._new_id_for(person)
            if track_id == UNTRACKED:
                person = _blanked(person)
            seen.append(replace(person, track_id=track_id))
            tracked.append(pose.with_track_id(track_id))
        carried = [p for p in pool if p.track_id != UNTRACKED]
        self._pool = seen + carried
        return tracked

    def _pool_person(self, pose: Pose) -> _PoolPerson:
        keypoints = np.asarray(pose.keypoints, dtype=np.float64)
        if keypoints.shape != (self.keypoints.num_joints, 3):
            raise ValueError(
                f"pose has keypoints of shape {keypoints.shape}, the tracker expects "
                f"({self.keypoints.num_joints}, 3) for {self.keypoints.name}"
            )
        box, area = keypoint_box(keypoints)
        return _PoolPerson(keypoints, box, area, UNTRACKED, self._frame)

    def _claim_best_match(self, person: _PoolPerson, pool: list[_PoolPerson]) -> int:
        """Remove the best-scoring pool person above the threshold from `pool`; its id or -1."""
        if not pool:
            return UNTRACKED
        scores = self._similarities(person, pool)
        best = int(np.argmax(scores))
        if not scores[best] > self.threshold:
            return UNTRACKED
        return pool.pop(best).track_id

    def _similarities(self, person: _PoolPerson, pool: list[_PoolPerson]) -> np.ndarray:
        if self.use_oks:
            pool_keypoints = np.stack([p.keypoints for p in pool])
            pool_areas = np.array([p.area for p in pool], dtype=np.float64)
            return oks_one_vs_many(person.keypoints, person.area, pool_keypoints, pool_areas, self._sigmas)
        ious = iou_to_pool(person.box, np.stack([p.box for p in pool]))
        # mmpose's loop skips NaN scores; argmax would pick them.
        return np.where(np.isnan(ious), -np.inf, ious)

    def _new_id_for(self, person: _PoolPerson) -> int:
        if np.count_nonzero(person.keypoints[:, 1]) < self.min_keypoints:
            return UNTRACKED
        track_id = self._next_id
        self._next_id += 1
        return track_id


def _blanked(person: _PoolPerson) -> _PoolPerson:
    """mmpose's 'deleted' person: all y at -10 and a zero box, area unchanged."""
    keypoints = person.keypoints.copy()
    keypoints[:, 1] = _BLANKED_Y
    return replace(person, keypoints=keypoints, box=np.zeros(4))


# --------------------------------------------------------------------------- smoothing


def _smoothing_factor(elapsed: float | np.ndarray, cutoff: float | np.ndarray):
    """Exponential-smoothing weight of a first-order low-pass at `cutoff` over `elapsed`."""
    r = 2 * math.pi * cutoff * elapsed
    return r / (r + 1)


def one_euro_step(
    x: np.ndarray, x_prev: np.ndarray, dx_prev: np.ndarray, elapsed: float, *,
    min_cutoff: float, beta: float, d_cutoff: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the One-Euro filter: (filtered value, filtered derivative).

    The cutoff rises with the (smoothed) speed, so slow jitter is removed strongly while fast
    motion lags little. Same operation order as mmpose's `OneEuro.__call__`.
    """
    a_d = _smoothing_factor(elapsed, d_cutoff)
    dx = (x - x_prev) / elapsed
    dx_hat = a_d * dx + (1 - a_d) * dx_prev
    cutoff = min_cutoff + beta * np.abs(dx_hat)
    a = _smoothing_factor(elapsed, cutoff)
    x_hat = a * x + (1 - a) * x_prev
    return x_hat, dx_hat


@dataclass
class _TrackFilter:
    """One track's filter state: last filtered x, y, their derivative, and when."""

    x_prev: np.ndarray  # [K, 2] float64
    dx_prev: np.ndarray  # [K, 2] float64
    time: float  # in frames
    update: int  # the smoother's update number when the track was last seen


class KeypointSmoother:
    """One-Euro smoothing of tracked keypoints, one filter per track id (one per video).

    Parameters are mmpose's (`configs/_base_/filters/one_euro.py`), in cycles per frame of the
    nominal `fps`; timestamps are seconds. A track's filter is forgotten when the track missed
    more than `max_missed_frames` consecutive updates (mmpose: 0) or, if `max_gap_s` is set,
    when more than that many seconds passed since it was last seen. Poses without a track id
    or with id -1 pass through unchanged. Not thread-safe: feed frames in order.
    """

    def __init__(
        self,
        *,
        fps: float,
        min_cutoff: float = 0.004,
        beta: float = 0.7,
        d_cutoff: float = 1.0,
        max_missed_frames: int = 0,
        max_gap_s: float | None = None,
    ) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = float(fps)
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.max_missed_frames = int(max_missed_frames)
        self.max_gap_s = max_gap_s
        self._filters: dict[int, _TrackFilter] = {}
        self._clock: float | None = None  # frames
        self._updates = 0

    def update(self, poses: list[Pose], timestamp: float | None) -> list[Pose]:
        """Smooth one frame's tracked poses; same order, scores and ids unchanged.

        `timestamp` is the frame's presentation time in seconds. When it is missing or does
        not move forward (broken timestamps), the frame is taken to be one nominal frame after
        the previous one, like mmpose's frame counter.
        """
        self._updates += 1
        now = self._advance_clock(timestamp)
        self._forget_stale_tracks(now)
        _check_unique_track_ids(poses)
        return [self._smooth_pose(pose, now) for pose in poses]

    def _advance_clock(self, timestamp: float | None) -> float:
        previous = self._clock
        if timestamp is not None and math.isfinite(timestamp):
            candidate = float(timestamp) * self.fps
            if previous is None or candidate > previous:
                self._clock = candidate
                return candidate
        self._clock = 0.0 if previous is None else previous + 1.0
        return self._clock

    def _forget_stale_tracks(self, now: float) -> None:
        """Drop filters of tracks absent too long, so a reused state never drags a new person."""
        def alive(state: _TrackFilter) -> bool:
            missed = self._updates - state.update - 1
            if missed > self.max_missed_frames:
                return False
            return self.max_gap_s is None or (now - state.time) / self.fps <= self.max_gap_s

        self._filters = {tid: s for tid, s in self._filters.items() if alive(s)}

    def _smooth_pose(self, pose: Pose, now: float) -> Pose:
        if pose.track_id is None or pose.track_id == UNTRACKED:
            return pose
        xy = np.asarray(pose.keypoints[:, :2], dtype=np.float64)
        state = self._filters.get(pose.track_id)
        if state is None:
            smoothed, derivative = xy, np.zeros_like(xy)
        else:
            smoothed, derivative = one_euro_step(
                xy, state.x_prev, state.dx_prev, now - state.time,
                min_cutoff=self.min_cutoff, beta=self.beta, d_cutoff=self.d_cutoff,
            )
        self._filters[pose.track_id] = _TrackFilter(smoothed, derivative, now, self._updates)
        keypoints = np.array(pose.keypoints, copy=True)
        keypoints[:, :2] = smoothed
        return replace(pose, keypoints=keypoints)


def _check_unique_track_ids(poses: list[Pose]) -> None:
    ids = [p.track_id for p in poses if p.track_id is not None and p.track_id != UNTRACKED]
    if len(ids) != len(set(ids)):
        raise ValueError(f"track ids repeat within one frame: {sorted(ids)}")
