"""Object keypoint similarity (OKS) of one person against many, and greedy OKS-NMS.

One module for the estimator's pose NMS, video tracking and the evaluator, so the formula, its
float32 rounding and the per-joint sigmas are written down once. Both callers follow mmpose
0.29's `oks_iou` (mmpose/core/post_processing/nms.py), whose operation order decides which
scores tie: OKS = mean over all K joints of exp(-d^2 / (2 sigma)^2 / ((a_i + a_j) / 2 + eps) / 2),
with every joint counted (no visibility threshold) and the mean stored in float32.

The sigmas themselves travel with the keypoint set (`KeypointSet.sigmas` in `keypoints.py`), so
an AIC model matches and suppresses with AIC sigmas.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# numpy's machine epsilon for float64, the `np.spacing(1)` mmpose adds to the mean area.
EPS = np.spacing(1)


def oks_one_vs_many(
    keypoints: np.ndarray,
    area: float | np.floating,
    others: np.ndarray,
    other_areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """OKS of one person `[K, >=2]` against N others `[N, K, >=2]`, as float32 `[N]`.

    The mean area is taken in float64 whatever the inputs' dtype (float32 areas are summed in
    float32 first, like the reference's NMS); distances keep the inputs' dtype.
    """
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    dx = others[:, :, 0] - keypoints[None, :, 0]
    dy = others[:, :, 1] - keypoints[None, :, 1]
    mean_area = np.asarray(area + other_areas).astype(np.float64) / 2 + EPS
    e = (dx**2 + dy**2) / variances / mean_area[:, None] / 2
    return (np.sum(np.exp(-e), axis=1) / e.shape[1]).astype(np.float32)


def keypoint_box_area(keypoints: np.ndarray) -> np.ndarray:
    """(max x - min x) * (max y - min y) over all joints of each person `[N, K, >=2]`."""
    x, y = keypoints[:, :, 0], keypoints[:, :, 1]
    return (x.max(axis=1) - x.min(axis=1)) * (y.max(axis=1) - y.min(axis=1))


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray | None,
    sigmas: Sequence[float] | np.ndarray,
    threshold: float,
) -> list[int]:
    """Greedy OKS non-maximum suppression of people, as mmpose 0.29's inference API runs it.

    Visits people by `scores.argsort()[::-1]` (numpy's default, unstable sort, as the reference
    does), keeps the first and drops the rest whose OKS with it exceeds `threshold`. Keypoints
    and areas are taken in float32 (the network's precision) and the OKS is stored in float32
    before the comparison, like the reference. `areas` None -> the keypoint box area over all
    joints. Returns the kept indices in selection order.
    """
    kpts = np.asarray(keypoints, dtype=np.float32)
    if kpts.ndim != 3 or kpts.shape[2] < 2:
        raise ValueError(f"keypoints must be [N, K, 3], got shape {kpts.shape}")
    if len(kpts) == 0:
        return []
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if sigmas.shape != (kpts.shape[1],):
        raise ValueError(f"{sigmas.size} sigmas for K={kpts.shape[1]} keypoints")
    area = keypoint_box_area(kpts) if areas is None else np.asarray(areas, dtype=np.float32)
    order = np.asarray(scores).argsort()[::-1]
    limit = np.float32(threshold)
    keep: list[int] = []
    while order.size:
        first, rest = order[0], order[1:]
        keep.append(int(first))
        overlap = oks_one_vs_many(kpts[first], area[first], kpts[rest], area[rest], sigmas)
        order = rest[overlap <= limit]
    return keep
