"""Skeleton drawing, pixel-for-pixel the reference demo's `imshow_keypoints`
(mmpose 0.29, mmpose/core/visualization/image.py).

The reference passes the dataset's colours to OpenCV unchanged, so they are interpreted as BGR
(an RGB palette read as BGR); `KeypointSet` stores them that way and they are handed over as they are. Coordinates
are truncated with `int()` exactly where the reference truncates them, and links whose endpoints
touch or leave the image border are skipped with the reference's (strict) bounds test.
Scores are compared with `kpt_thr` in float64, as the reference's float32-scalar-vs-float
comparison does under NumPy 1.x (NumPy 2 would compare in float32 and flip ties such as a
score of float32(0.7) against 0.7).

Widths follow the picture unless given (`drawing_widths`): the reference's fixed radius 4 and
thickness 1 are hairlines on a 1080p frame and blots on a 320x240 clip, so by default the line
width is Ultralytics' rule, max(round(0.003 * (W + H) / 2), 2), and the joints, lines and track
ids are sized from it. `DrawConfig(radius=4, thickness=1)` draws exactly as the reference.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .config import DrawConfig
from .keypoints import KeypointSet
from .types import Pose

# Distinct BGR colours for track ids; indexed by id so one person keeps its colour across frames.
TRACK_PALETTE: tuple[tuple[int, int, int], ...] = (
    (75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245),
    (180, 30, 145), (240, 240, 70), (230, 50, 240), (60, 245, 210), (212, 190, 250),
    (128, 128, 0), (255, 190, 220), (40, 110, 170), (200, 250, 255), (0, 0, 128),
    (195, 255, 170), (0, 128, 128), (180, 215, 255), (128, 0, 0), (255, 255, 255),
)

_TRACK_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class DrawingWidths:
    """The pixel sizes one image is drawn with (`drawing_widths`)."""

    radius: int  # joint circles
    thickness: int  # skeleton lines
    font_scale: float  # track ids (OpenCV's Hershey scale)
    text_thickness: int


def line_width(width: int, height: int) -> int:
    """Ultralytics' line width for a picture: 0.3 % of its mean side, rounded, at least 2."""
    return max(round(0.003 * (width + height) / 2), 2)


def drawing_widths(cfg: DrawConfig, width: int, height: int) -> DrawingWidths:
    """The widths of a `width` x `height` image: `cfg.radius` / `cfg.thickness` when given,
    else from `line_width`: lines that wide, joints one pixel more in radius (the links are drawn
    over the joints, so a joint stays a visible dot about twice a limb's width without covering a
    small face); track ids always scale with the picture (their scale a third of the line width,
    stroke one less than it)."""
    unit = line_width(width, height)
    return DrawingWidths(
        radius=unit + 1 if cfg.radius is None else int(cfg.radius),
        thickness=unit if cfg.thickness is None else int(cfg.thickness),
        font_scale=unit / 3,
        text_thickness=max(unit - 1, 1),
    )


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track id: a fixed palette entry, stable across frames and runs."""
    return TRACK_PALETTE[track_id % len(TRACK_PALETTE)]


def draw_poses(
    image_bgr: np.ndarray, poses: Sequence[Pose], keypoints: KeypointSet, cfg: DrawConfig
) -> np.ndarray:
    """Return a copy of `image_bgr` with every pose drawn, persons in list order.

    Per person: the joints first (filled circles), then the links, then (optionally) the track id,
    which is the reference's order, so overlaps resolve the same way.
    """
    canvas = np.ascontiguousarray(image_bgr).copy()
    height, width = canvas.shape[:2]
    widths = drawing_widths(cfg, width, height)
    for pose in poses:
        _check_joint_count(pose, keypoints)
        _draw_joints(canvas, pose.keypoints, keypoints, cfg.kpt_thr, widths)
        _draw_links(canvas, pose.keypoints, keypoints, cfg.kpt_thr, widths)
        if cfg.draw_track_ids and pose.track_id is not None:
            _draw_track_id(canvas, pose, cfg.kpt_thr, widths)
    return canvas


def draw_and_write(
    write: Callable[[np.ndarray], object], image: np.ndarray, poses: Sequence[Pose], keypoints: KeypointSet, cfg: DrawConfig,
    timings: dict[str, float],
) -> None:
    """Draw the poses on the image and hand it to `write` (an image file, a video encoder),
    timing both as the "draw" and "encode" stages of the frame."""
    t0 = time.perf_counter()
    drawn = draw_poses(image, poses, keypoints, cfg)
    t1 = time.perf_counter()
    write(drawn)
    timings["draw"] = t1 - t0
    timings["encode"] = time.perf_counter() - t1


def _check_joint_count(pose: Pose, keypoints: KeypointSet) -> None:
    if pose.keypoints.shape[0] != keypoints.num_joints:
        raise ValueError(
            f"pose has {pose.keypoints.shape[0]} joints, keypoint set {keypoints.name!r} "
            f"has {keypoints.num_joints}"
        )


def _draw_joints(
    canvas: np.ndarray, kpts: np.ndarray, keypoints: KeypointSet, kpt_thr: float, widths: DrawingWidths
) -> None:
    """Filled circles at the truncated positions of joints scoring at least `kpt_thr`."""
    for joint, (x, y, score) in enumerate(kpts[:, :3]):
        if float(score) < kpt_thr:
            continue
        colour = tuple(int(c) for c in keypoints.joint_colours[joint])
        cv2.circle(canvas, (int(x), int(y)), widths.radius, colour, -1)


def _draw_links(
    canvas: np.ndarray, kpts: np.ndarray, keypoints: KeypointSet, kpt_thr: float, widths: DrawingWidths
) -> None:
    """Skeleton lines, in table order, between confident joints strictly inside the image."""
    height, width = canvas.shape[:2]
    for (a, b), link_colour in zip(keypoints.skeleton, keypoints.link_colours):
        p1 = (int(kpts[a, 0]), int(kpts[a, 1]))
        p2 = (int(kpts[b, 0]), int(kpts[b, 1]))
        if not (_strictly_inside(p1, width, height) and _strictly_inside(p2, width, height)):
            continue
        if float(kpts[a, 2]) < kpt_thr or float(kpts[b, 2]) < kpt_thr:
            continue
        colour = tuple(int(c) for c in link_colour)
        cv2.line(canvas, p1, p2, colour, thickness=widths.thickness)


def _strictly_inside(point: tuple[int, int], width: int, height: int) -> bool:
    """The reference's link test: a point on row/column 0 counts as outside (quirk kept)."""
    x, y = point
    return 0 < x < width and 0 < y < height


def _draw_track_id(canvas: np.ndarray, pose: Pose, kpt_thr: float, widths: DrawingWidths) -> None:
    """Write the track id just above the top-most confident joint; nothing if none is confident."""
    kpts = pose.keypoints
    visible = np.flatnonzero(kpts[:, 2].astype(np.float64) >= kpt_thr)
    if visible.size == 0:
        return
    top = visible[np.argmin(kpts[visible, 1])]
    text = str(pose.track_id)
    (_, text_h), _ = cv2.getTextSize(text, _TRACK_FONT, widths.font_scale, widths.text_thickness)
    x = int(kpts[top, 0])
    # Above the joint's circle (a gap of one line width), never above the image's first text line.
    y = max(int(kpts[top, 1]) - widths.radius - widths.thickness - 2, text_h)
    cv2.putText(
        canvas, text, (x, y), _TRACK_FONT, widths.font_scale,
        track_colour(int(pose.track_id)), widths.text_thickness, cv2.LINE_AA,
    )
