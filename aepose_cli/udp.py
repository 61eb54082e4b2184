"""Unbiased Data Processing (UDP; Huang et al., CVPR 2020) at test time, as mmpose 0.29's
bottom-up `*_udp` configs run it.

What changes against the default path (`preprocess.py`, `grouping.py`):

* Sizes and warp (`_get_multi_scale_size(use_udp=True)`, `_resize_align_multi_scale_udp` in
  mmpose/datasets/pipelines/bottom_up_transform.py): the canvas sizes are the default ones, but
  `scale` is in pixels (`w - 1`, and the other side stretched by `(size - 1)` ratios), `center`
  is half of it, and the image is warped by a pure scaling (`get_warp_matrix`, float32) that maps
  pixel centres 0 and `w - 1` onto 0 and `W - 1`. Every scale's warp uses the scale computed
  at the smallest test scale; results are mapped back with the one computed at scale 1.
* Maps are not projected to the base canvas: grouping runs at the network's heatmap resolution
  (HigherHRNet: 1/2, the others 1/4), all resizes with align_corners=True (see
  `aggregation.AggregationSettings.reference`).
* Adjust (`HeatmapParser.parse` with `use_udp`): instead of the quarter-pixel step, one Newton
  step on log-heatmaps smoothed by a 3x3 Gaussian (`post_dark_udp`, DARK); refine adds no +0.5
  offset; and the coordinates go back through `get_warp_matrix` from `heatmap size - 1` to
  `scale` (`get_group_preds(use_udp=True)`).

QUIRK (the reference on a CPU): `post_dark_udp` reads the heatmaps with `.cpu().numpy()`, which on
a CPU tensor shares its memory, and blurs/clips/logs them in place; the refine step that follows
then reads those log-maps (`dark_udp_log_maps`), not the heatmaps. On a GPU `.cpu()` copies and
refine reads the real heatmaps. The fixtures record both (`cpu_*`, `copy_*`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .preprocess import ScaleInput


def _ceil_to(x: float, base: int) -> int:
    return int(math.ceil(x / base)) * base


def udp_canvas(
    w: int, h: int, s: float, s_min: float, input_size: int, base: int = 64
) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """Canvas (W, H), center and scale (in pixels) at test scale `s`: the UDP branch of
    `_get_multi_scale_size`, float64 left to right as the reference writes it."""
    m = _ceil_to(s_min * input_size, base)
    if w < h:
        w_r = int(m * s / s_min)
        h_r = int(_ceil_to(m / w * h, base) * s / s_min)
        scale_w = w - 1.0
        scale_h = (h_r - 1.0) / (w_r - 1.0) * (w - 1.0)
    else:
        h_r = int(m * s / s_min)
        w_r = int(_ceil_to(m / h * w, base) * s / s_min)
        scale_h = h - 1.0
        scale_w = (w_r - 1.0) / (h_r - 1.0) * (h - 1.0)
    return (w_r, h_r), (scale_w / 2.0, scale_h / 2.0), (scale_w, scale_h)


def warp_matrix(theta_deg: float, size_input, size_dst, size_target) -> np.ndarray:
    """`get_warp_matrix`: the 2x3 float32 affine that rotates by `theta_deg` about the centre of
    `size_input` and scales `size_target` onto `size_dst` (sizes as (w, h); pass numpy float32
    arrays where the reference does, since the scale factors are computed in their dtype)."""
    theta = np.deg2rad(theta_deg)
    matrix = np.zeros((2, 3), dtype=np.float32)
    scale_x = size_dst[0] / size_target[0]
    scale_y = size_dst[1] / size_target[1]
    matrix[0, 0] = math.cos(theta) * scale_x
    matrix[0, 1] = -math.sin(theta) * scale_x
    matrix[0, 2] = scale_x * (
        -0.5 * size_input[0] * math.cos(theta) + 0.5 * size_input[1] * math.sin(theta) + 0.5 * size_target[0]
    )
    matrix[1, 0] = math.sin(theta) * scale_y
    matrix[1, 1] = math.cos(theta) * scale_y
    matrix[1, 2] = scale_y * (
        -0.5 * size_input[0] * math.sin(theta) - 0.5 * size_input[1] * math.cos(theta) + 0.5 * size_target[1]
    )
    return matrix


@dataclass(frozen=True)
class UdpGeometry:
    """Where the original image sits, UDP style (what `BottomUpGetImgSize(use_udp=True)` stores).

    base_size_wh: the scale-1 canvas; center: half of `scale` (stored by the reference, used by
    nothing at test time); scale: (sw, sh) in PIXELS, computed at scale 1 (maps results back);
    inputs: per scale (descending) the canvas size and warp matrix (the reference's float32
    values, held as float64 like the default path's); `preprocess.warp_image` warps with it
    exactly as the reference's `cv2.warpAffine(..., flags=INTER_LINEAR)` call does.
    """

    image_wh: tuple[int, int]
    base_size_wh: tuple[int, int]
    center: tuple[float, float]
    scale: tuple[float, float]
    inputs: tuple[ScaleInput, ...]


def udp_image_geometry(w: int, h: int, scales: tuple[float, ...], input_size: int = 512, base: int = 64) -> UdpGeometry:
    """Sizes, centre, scale and warp matrices of every test scale for a `w` x `h` image."""
    s_min = min(scales)
    base_size, center, scale = udp_canvas(w, h, 1, s_min, input_size, base)
    # `_resize_align_multi_scale_udp` warps every scale with the scale computed at s_min.
    _, _, warp_scale = udp_canvas(w, h, s_min, s_min, input_size, base)
    warp_scale32 = np.array(warp_scale, dtype=np.float32)
    inputs = []
    for s in sorted(scales, reverse=True):
        size, _, _ = udp_canvas(w, h, s, s_min, input_size, base)
        m = warp_matrix(0, warp_scale32, np.array(size, dtype=np.float32) - 1.0, warp_scale32)
        inputs.append(ScaleInput(s, size, m.astype(np.float64)))
    return UdpGeometry((w, h), base_size, center, scale, tuple(inputs))


def dark_udp_log_maps(heatmaps: np.ndarray, kernel: int = 3) -> np.ndarray:
    """What `post_dark_udp` turns the heatmaps `[K, H, W]` into (a new float32 array): each map
    Gaussian-blurred (`kernel` x `kernel`, sigma from the kernel), clipped to [0.001, 50], log.
    On a CPU the reference leaves its heatmaps in this state for refine (see the module doc)."""
    maps = np.array(heatmaps, dtype=np.float32, copy=True)
    for m in maps:
        cv2.GaussianBlur(m, (kernel, kernel), 0, m)
    np.clip(maps, 0.001, 50, maps)
    np.log(maps, maps)
    return maps


def dark_udp_adjust(coords: np.ndarray, log_maps: np.ndarray) -> np.ndarray:
    """One Newton step of every `(x, y)` in `coords` `[P, K, 2]` (float32, integer positions on
    the heatmap grid) towards the peak of joint k's log-map `log_maps[k]` (`post_dark_udp` with
    one heatmap batch). Returns new float32 coordinates; joints without a detection move too, as
    in the reference (their score stays 0)."""
    coords = np.array(coords, dtype=np.float32, copy=True)
    p, k = coords.shape[:2]
    if p == 0:
        return coords
    _, h, w = log_maps.shape
    padded = np.pad(log_maps[None], ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").flatten()
    # Float32 flat indices into the padded maps, as the reference computes them.
    index = coords[..., 0] + 1 + (coords[..., 1] + 1) * (w + 2)
    index += (w + 2) * (h + 2) * np.arange(0, k).reshape(-1, k)
    index = index.astype(int).reshape(-1, 1)
    i_ = padded[index]
    ix1 = padded[index + 1]
    iy1 = padded[index + w + 2]
    ix1y1 = padded[index + w + 3]
    ix1_y1_ = padded[index - w - 3]
    ix1_ = padded[index - 1]
    iy1_ = padded[index - 2 - w]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    derivative = np.concatenate([dx, dy], axis=1).reshape(p, k, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(p, k, 2, 2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    coords -= np.einsum("ijmn,ijnk->ijmk", hessian, derivative).squeeze(-1)
    return coords


def udp_to_image_coords(joints: np.ndarray, scale: tuple[float, float], heatmap_size_wh: tuple[int, int]) -> np.ndarray:
    """Heatmap-grid coordinates -> original-image pixels (`get_group_preds(use_udp=True)`):
    `get_warp_matrix` from `heatmap size - 1` to `scale`, applied to `[..., :2]` of a copy."""
    out = np.array(joints, dtype=np.float32, copy=True)
    if out.shape[0] == 0:
        return out
    size_t = np.array(heatmap_size_wh, dtype=np.float32) - 1.0
    trans = warp_matrix(0, size_t, np.array(scale, dtype=np.float64), size_t)
    xy = out[..., :2].reshape(-1, 2)
    ones = xy[:, 0:1] * 0 + 1
    out[..., :2] = np.dot(np.concatenate((xy, ones), axis=1), trans.T).reshape(out[..., :2].shape)
    return out
