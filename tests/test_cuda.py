"""CUDA parity and precision modes; they run wherever a GPU is present (skipped otherwise)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from aepose_cli import PoseEstimator

from paths import GOLDEN, SHARED, TINY_CHECKPOINT, needs_shared

pytestmark = [
    pytest.mark.gpu,
    needs_shared,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CASES = ["000000196141/a_s1_flip", "000000197388/c_ms_flip_thr003", "bus/a_s1_flip", "zidane/b_s1_noflip"]


@pytest.mark.parametrize("name", CASES)
def test_cuda_exact_mode_matches_reference_people(name):
    case = json.loads((GOLDEN / "cases" / f"{name}.json").read_text())
    cfg = case["test_cfg"]
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    est = PoseEstimator(
        checkpoint=TINY_CHECKPOINT, device="cuda", scales=tuple(case["scales"]), flip=case["flip_test"],
        detection_threshold=cfg["detection_threshold"], pose_nms=None,
    )
    poses = est.predict(cv2.imread(str(SHARED / case["image"])))
    # TF32 is off during the forward pass only (the parity below shows it was off); the
    # process-wide flags are as the caller left them.
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == flags
    assert len(poses) == case["num_people"]
    for pose, want in zip(poses, case["people"]):
        np.testing.assert_allclose(pose.keypoints, np.array(want["keypoints"]), rtol=0, atol=1e-3)
        assert abs(pose.score - want["score"]) <= 1e-5


def test_cuda_maps_match_cpu_maps():
    image = cv2.imread(str(SHARED / "data" / "ultralytics-assets" / "bus.jpg"))
    cpu = PoseEstimator(checkpoint=TINY_CHECKPOINT).maps(image)
    gpu = PoseEstimator(checkpoint=TINY_CHECKPOINT, device="cuda").maps(image)
    np.testing.assert_allclose(gpu.heatmaps.cpu().numpy(), cpu.heatmaps.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(gpu.tags.cpu().numpy(), cpu.tags.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fast_precisions_run_and_stay_close(precision):
    image = cv2.imread(str(SHARED / "data" / "ultralytics-assets" / "bus.jpg"))
    exact = PoseEstimator(checkpoint=TINY_CHECKPOINT, device="cuda").maps(image)
    fast = PoseEstimator(checkpoint=TINY_CHECKPOINT, device="cuda", precision=precision).maps(image)
    assert fast.heatmaps.dtype == torch.float32
    error = (fast.heatmaps - exact.heatmaps).abs()
    scale = exact.heatmaps.abs().max().item()
    # It really ran in reduced precision (fp32 maps would be identical) ...
    assert error.max().item() > 0
    # ... and stays close relative to the maps' own range (fp16 ~1e-3, bf16 ~1e-2 per op).
    assert error.max().item() <= 0.05 * scale, (error.max().item(), scale)
    assert error.mean().item() <= 0.005 * scale, (error.mean().item(), scale)
