"""Test-time sizes, affine warp and normalisation, reproducing the reference bit for bit
(`_resize_align_multi_scale` and `_get_multi_scale_size` in mmpose/datasets/pipelines/bottom_up_transform.py).

The arithmetic order below is deliberate: float64 expressions are evaluated left to right as the
reference writes them, the affine points are float32, and OpenCV does the warp, because its
fixed-point interpolation cannot be reproduced with another resampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ScaleInput:
    """One test scale: the canvas size and the warp that fills it."""

    scale: float
    size_wh: tuple[int, int]
    matrix: np.ndarray  # 2x3 float64 affine, original image -> canvas


@dataclass(frozen=True)
class ImageGeometry:
    """Where the original image sits on the base canvas (used to map results back)."""

    image_wh: tuple[int, int]
    base_size_wh: tuple[int, int]
    center: tuple[int, int]
    scale: tuple[float, float]  # in units of 200 px, as the reference stores it
    inputs: tuple[ScaleInput, ...]  # descending scale order


def _ceil_to(x: float, base: int) -> int:
    return int(math.ceil(x / base)) * base


def canvas_size(
    w: int, h: int, s: float, s_min: float, input_size: int, base: int
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Canvas (W, H) and scale (sx, sy)/200 for test scale `s` (`_get_multi_scale_size`, non-UDP branch)."""
    m = _ceil_to(s_min * input_size, base)
    if w < h:
        w_r = int(m * s / s_min)
        h_r = int(_ceil_to(m / w * h, base) * s / s_min)
        scale = (w / 200.0, h_r / w_r * w / 200.0)
    else:
        h_r = int(m * s / s_min)
        w_r = int(_ceil_to(m / h * w, base) * s / s_min)
        scale = (w_r / h_r * h / 200.0, h / 200.0)
    return (w_r, h_r), scale


def affine_matrix(center: tuple[int, int], scale: tuple[float, float], size_wh: tuple[int, int]) -> np.ndarray:
    """`get_affine_transform` of the reference with rotation 0 and no shift."""
    src_w = scale[0] * 200.0
    dst_w, dst_h = size_wh
    c = np.array(center, dtype=np.float64)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = c
    src[1] = c + np.array([0.0, src_w * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def image_geometry(w: int, h: int, scales: tuple[float, ...], input_size: int = 512, base: int = 64) -> ImageGeometry:
    """Sizes, centre, scale and warp matrices for every test scale of a `w` x `h` image."""
    s_min = min(scales)
    base_size, scale = canvas_size(w, h, 1.0, s_min, input_size, base)
    center = (round(w / 2.0), round(h / 2.0))  # Python round: half to even, as the reference
    inputs = []
    for s in sorted(scales, reverse=True):
        size, scale_s = canvas_size(w, h, s, s_min, input_size, base)
        inputs.append(ScaleInput(s, size, affine_matrix(center, scale_s, size)))
    return ImageGeometry((w, h), base_size, center, scale, tuple(inputs))


def warp_image(image_rgb: np.ndarray, scale_input: ScaleInput) -> np.ndarray:
    """The uint8 RGB canvas for one scale (OpenCV defaults: bilinear, black border)."""
    return cv2.warpAffine(image_rgb, scale_input.matrix, scale_input.size_wh)


def to_normalised_tensor(canvas_rgb: np.ndarray) -> torch.Tensor:
    """`ToTensor` + `NormalizeTensor` in float32: `(v/255 - mean) / std`, CHW."""
    t = torch.from_numpy(np.ascontiguousarray(canvas_rgb.transpose(2, 0, 1))).float().div(255)
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32)[:, None, None]
    std = torch.tensor(STD_RGB, dtype=torch.float32)[:, None, None]
    return t.sub_(mean).div_(std)


def bgr_to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
