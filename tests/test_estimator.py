"""The public API: PoseEstimator on real images, pose NMS, batching, keypoint-set checks."""
from __future__ import annotations

import json
from functools import lru_cache

import cv2
import numpy as np
import pytest

from aepose_cli import Pose, PoseEstimator
from aepose_cli.errors import CheckpointError, ConfigError, InputError
from aepose_cli.keypoints import COCO
from aepose_cli.oks import oks_nms

from paths import DATA, GOLDEN, TINY_CHECKPOINT, needs_shared

pytestmark = [pytest.mark.slow, needs_shared]

BUS = DATA / "ultralytics-assets" / "bus.jpg"
ZIDANE = DATA / "ultralytics-assets" / "zidane.jpg"


@lru_cache(maxsize=1)
def _estimator_without_nms():
    return PoseEstimator(checkpoint=TINY_CHECKPOINT, pose_nms=None)


def test_predict_without_nms_gives_the_reference_people():
    case = json.loads((GOLDEN / "cases" / "bus" / "a_s1_flip.json").read_text())
    poses = _estimator_without_nms().predict(BUS)
    assert len(poses) == case["num_people"]
    for pose, want in zip(poses, case["people"]):
        assert isinstance(pose, Pose) and pose.keypoints.shape == (17, 3)
        np.testing.assert_allclose(pose.keypoints, np.array(want["keypoints"]), rtol=0, atol=1e-3)
        assert abs(pose.score - want["score"]) <= 1e-5


def test_default_pose_nms_keeps_the_reference_api_selection():
    default = PoseEstimator(checkpoint=TINY_CHECKPOINT)  # nothing said about pose NMS
    assert default.config.pose_nms == 0.9  # mmpose 0.29's inference API: pose_nms_thr=0.9
    all_poses = _estimator_without_nms().predict(BUS)
    kept = default.predict(BUS)
    keep = oks_nms(
        np.stack([p.keypoints for p in all_poses]),
        np.array([p.score for p in all_poses], dtype=np.float32),
        np.array([p.area for p in all_poses], dtype=np.float32),
        COCO.sigmas,
        0.9,
    )
    assert 0 < len(kept) < len(all_poses)
    assert [p.score for p in kept] == [all_poses[i].score for i in keep]
    scores = [p.score for p in kept]
    assert scores == sorted(scores, reverse=True)


def test_array_and_path_inputs_agree_and_maps_have_reference_shapes():
    est = _estimator_without_nms()
    image = cv2.imread(str(ZIDANE))
    from_path = est.predict(ZIDANE)
    from_array = est.predict(image)
    assert len(from_path) == len(from_array)
    for a, b in zip(from_path, from_array):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    maps = est.maps(image)
    assert tuple(maps.heatmaps.shape) == (17, 512, 960)
    assert tuple(maps.tags.shape) == (17, 512, 960, 2)
    assert maps.geometry.base_size_wh == (960, 512) and maps.geometry.center == (640, 360)


def test_batch_of_mixed_sizes_equals_single_images():
    est = _estimator_without_nms()
    results = est.predict_batch([BUS, ZIDANE, BUS])
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].image_size == (810, 1080) and results[1].image_size == (1280, 720)
    single = est.predict(BUS)
    for r in (results[0], results[2]):
        assert len(r.poses) == len(single)
        for a, b in zip(r.poses, single):
            np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert set(r.timings) >= {"network", "grouping"}


def test_keypoint_set_must_match_the_checkpoint():
    with pytest.raises(CheckpointError, match="17 keypoints.*'aic' has 14"):
        PoseEstimator(checkpoint=TINY_CHECKPOINT, keypoints="aic")


def test_bad_options_and_inputs(tmp_path):
    with pytest.raises(ConfigError):
        PoseEstimator(checkpoint=TINY_CHECKPOINT, scales=(2, 0.5))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="bad.jpg"):
        _estimator_without_nms().predict(bad)


def test_config_and_keywords_merge_instead_of_ignoring_the_keywords():
    from aepose_cli import InferenceConfig

    config = InferenceConfig(scales=(2.0, 1.0), flip=False, detection_threshold=0.2)
    est = PoseEstimator(checkpoint=TINY_CHECKPOINT, config=config, scales=(1.0,), flip=True, pose_nms=None)
    assert est.config.scales == (1.0,) and est.config.flip is True and est.config.pose_nms is None
    assert est.config.detection_threshold == 0.2  # from config, not overridden
    with pytest.raises(TypeError):
        PoseEstimator(checkpoint=TINY_CHECKPOINT, config=config, no_such_option=1)


def test_the_library_refuses_what_the_command_line_refuses():
    """Rules the CLI enforced alone are the configs' own: a library run gets them too."""
    from aepose_cli.config import EngineConfig, InferenceConfig, check_engine_device

    with pytest.raises(ConfigError, match="--precision fp16 needs a CUDA device; on cpu"):
        InferenceConfig(precision="fp16")
    with pytest.raises(ConfigError, match="--precision bf16 needs a CUDA device"):
        PoseEstimator(checkpoint=TINY_CHECKPOINT, precision="bf16")
    check_engine_device(InferenceConfig(), EngineConfig(engine="ray"))  # CPU workers, CPU device
    check_engine_device(InferenceConfig(device="cuda"), EngineConfig())  # the single engine: any device
    with pytest.raises(ConfigError, match="--device cuda with --engine ray: the workers run on CPUs"):
        check_engine_device(InferenceConfig(device="cuda"), EngineConfig(engine="ray"))
    with pytest.raises(ConfigError, match="--device cpu with --engine ray: the workers run on their GPUs"):
        check_engine_device(InferenceConfig(), EngineConfig(engine="ray", gpus_per_worker=1))


def test_building_an_estimator_leaves_global_torch_flags_alone():
    import torch

    from aepose_cli.backends.torch_backend import tf32_disabled

    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _estimator_without_nms().predict(BUS)
        PoseEstimator(checkpoint=TINY_CHECKPOINT)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with tf32_disabled():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
