"""End-to-end parity with the reference on real images (golden/cases and golden/stages).

Same people in the same order, keypoints within 1e-3 px, scores within 1e-5, top-k candidates
equal; the stage-by-stage fixtures pin every intermediate (network passes, aggregated maps,
candidates, matched/adjusted/refined groups, scores, predictions).
"""
from __future__ import annotations

import json
from functools import lru_cache

import cv2
import numpy as np
import pytest
import torch

from aepose_cli.config import InferenceConfig
from aepose_cli.engine import InferenceEngine, aggregate_outputs
from aepose_cli.grouping import adjust, group, match_by_tag, person_scores, poses_from, refine, to_image_coords, top_k
from aepose_cli.keypoints import COCO
from aepose_cli.model import build_from_checkpoint

from paths import GOLDEN, SHARED, TINY_CHECKPOINT, require_shared

require_shared()
pytestmark = pytest.mark.slow

CASE_FILES = sorted((GOLDEN / "cases").glob("*/*.json"))


@lru_cache(maxsize=1)
def _model():
    return build_from_checkpoint(TINY_CHECKPOINT)[0]


def _config(case: dict) -> InferenceConfig:
    cfg = case["test_cfg"]
    return InferenceConfig(
        scales=tuple(float(s) for s in case["scales"]),
        flip=case["flip_test"],
        max_people=cfg["max_num_people"],
        detection_threshold=cfg["detection_threshold"],
        tag_threshold=cfg["tag_threshold"],
        adjust=cfg["adjust"],
        refine=cfg["refine"],
        pose_nms=None,
    )


@lru_cache(maxsize=2)
def _raw(image: str, scales: tuple):
    """Network passes once per (image, scales), flip included; settings share them."""
    engine = InferenceEngine(_model(), COCO, InferenceConfig(scales=scales, flip=True))
    geometry, inputs = engine.prepare(cv2.imread(str(SHARED / image)))
    (maps,), (raw,) = engine.infer_prepared([(geometry, inputs)], keep_raw=True)
    return geometry, raw


def _maps(image: str, scales: tuple, flip: bool):
    """Aggregated maps for a setting, through the engine's own aggregation step."""
    geometry, raw = _raw(image, scales)
    outs = [torch.cat([hm, tg]) for hm, tg in zip(raw.heatmaps, raw.tags)]
    outs_flip = [torch.cat([hm, tg]) for hm, tg in zip(raw.heatmaps_flip, raw.tags_flip)] if flip else None
    return aggregate_outputs(geometry, outs, outs_flip, torch.tensor(COCO.flip_index))[0]


def test_every_case_is_covered():
    assert len(CASE_FILES) >= 25


@pytest.mark.parametrize("case_file", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_matches_reference(case_file):
    case = json.loads(case_file.read_text())
    config = _config(case)
    maps = _maps(case["image"], config.scales, config.flip)
    geo = maps.geometry
    assert list(geo.base_size_wh) == case["base_size_wh"]
    assert list(geo.center) == case["center"]
    assert np.allclose(geo.scale, case["scale"], rtol=0, atol=1e-12)
    assert [list(si.size_wh) for si in geo.inputs] == case["input_sizes_wh"]

    cands = top_k(maps.heatmaps, maps.tags, config.max_people)
    np.testing.assert_allclose(cands.val, np.array(case["topk_val"], dtype=np.float32), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cands.loc, np.array(case["topk_loc"]))

    poses = poses_from(group(maps, COCO, config), geo)
    people = case["people"]
    assert len(poses) == case["num_people"] == len(people)
    for got, want in zip(poses, people):
        want_kpts = np.array(want["keypoints"])
        np.testing.assert_allclose(got.keypoints[:, :2], want_kpts[:, :2], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got.keypoints[:, 2], want_kpts[:, 2], rtol=0, atol=1e-5)
        assert abs(got.score - want["score"]) <= 1e-5


STAGES = [("a_s1_flip", (1.0,), 1e-4), ("c_ms_flip", (2.0, 1.0, 0.5), 2e-3)]


@pytest.mark.parametrize("name,scales,net_tol", STAGES, ids=[s[0] for s in STAGES])
def test_stage_by_stage(name, scales, net_tol):
    meta = json.loads((GOLDEN / "stages" / f"stages_000000000785_{name}.json").read_text())
    z = np.load(GOLDEN / "stages" / f"stages_000000000785_{name}.npz")
    image = cv2.imread(str(SHARED / meta["image"]))
    config = InferenceConfig(scales=scales, flip=True, pose_nms=None)
    engine = InferenceEngine(_model(), COCO, config)
    (maps,), (raw,) = engine.infer([image], keep_raw=True)
    assert list(maps.geometry.base_size_wh) == meta["base_size_wh"]
    assert list(maps.geometry.center) == meta["center"]
    assert np.allclose(maps.geometry.scale, meta["scale"], rtol=0, atol=1e-12)
    if "input_s0" in z:
        geometry, inputs = engine.prepare(image)
        np.testing.assert_array_equal(inputs[0].numpy(), z["input_s0"][0])
    for i in range(len(scales)):
        for key, got in [
            ("net_heatmaps", raw.heatmaps[i]),
            ("net_tags", raw.tags[i]),
            ("net_heatmaps_flip", raw.heatmaps_flip[i]),
            ("net_tags_flip", raw.tags_flip[i]),
        ]:
            want = z[f"{key}_s{i}"][0].astype(np.float32)
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=net_tol, err_msg=f"{key}_s{i}")
    np.testing.assert_allclose(maps.heatmaps.numpy()[:, ::8, ::8], z["final_heatmaps_every8"][0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps.tags.numpy()[:, ::8, ::8], z["final_tags_every8"][0], rtol=0, atol=1e-4)

    cands = top_k(maps.heatmaps, maps.tags, 30)
    np.testing.assert_allclose(cands.val, z["topk_val_k"][0], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cands.loc, z["topk_loc_k"][0])
    np.testing.assert_allclose(cands.tag, z["topk_tag_k"][0], rtol=0, atol=1e-4)
    joints = match_by_tag(cands, COCO, config)
    _assert_people(joints, z["grouped_matched"])
    joints = adjust(joints, maps.heatmaps)
    _assert_people(joints, z["grouped_adjusted"])
    np.testing.assert_allclose(person_scores(joints), z["scores"], rtol=0, atol=1e-5)
    joints = refine(joints, maps.heatmaps, maps.tags)
    _assert_people(joints, z["grouped_refined"])
    _assert_people(to_image_coords(joints, maps.geometry), z["preds"])


def _assert_people(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[:, :, :2], want[:, :, :2])  # quantised coordinates: exact
    np.testing.assert_allclose(got[:, :, 2:], want[:, :, 2:], rtol=0, atol=1e-4)
