"""End-to-end parity with the reference on real images (golden/cases and golden/stages).

Same people in the same order, keypoints within 1e-3 px, scores within 1e-5, top-k candidates
equal; the stage-by-stage fixtures pin every intermediate (network passes, aggregated maps,
candidates, matched/adjusted/refined groups, scores, predictions).

Every test runs under each network backend whose package is installed (`torch`, the exact
path the fixtures were recorded with; `onnxruntime`; `openvino`), skipped with a reason
otherwise. ONNX Runtime (`--backend auto` on CPU) runs every case; OpenVINO runs the stage
tests and one image's seven settings (OPENVINO_CASE_IMAGES) to keep CI short.

torch must agree exactly (top-k order included). The other runtimes round differently (~1e-6
on the network outputs, more on some CPUs than others), which can reorder top-k candidates
whose values are equal to ~1e-6 and from there change a grouping. For them the network
outputs, the aggregated maps and the top-k values must still agree to the fixtures'
tolerances; where the top-k locations differ, every difference must be a near-tie
(`_near_tie_reorder`), and where the candidates are identical but a keypoint moved, it may move
by one base-canvas pixel at most (a near-tie in adjust's neighbour comparison). Such cases are
reported as xfail with the reason, not passed: the people they give differ from the reference's.
"""
from __future__ import annotations

import json
from functools import cache, lru_cache

import cv2
import numpy as np
import pytest
import torch

from aepose_cli.backends import create_backend, is_installed
from aepose_cli.config import InferenceConfig
from aepose_cli.grouping import adjust, group, match_by_tag, person_scores, poses_from, refine, to_image_coords, top_k
from aepose_cli.inference import InferenceEngine, aggregate_outputs
from aepose_cli.keypoints import COCO
from aepose_cli.model import build_from_checkpoint

from paths import GOLDEN, SHARED, TINY_CHECKPOINT, require_shared

require_shared()
pytestmark = pytest.mark.slow

CASE_FILES = sorted((GOLDEN / "cases").glob("*/*.json"))
# OpenVINO is not a default backend: one image's settings (single and multi-scale, flip and
# not) stand for all of them.
OPENVINO_CASE_IMAGES = ("000000196141",)
# Every (image, scales) pair of one backend: the network outputs of a few tiny-model passes.
RAW_CACHE = 2 * len({path.parent.name for path in CASE_FILES}) + 2


def _backend_param(name: str, *args):
    skip = pytest.mark.skipif(not is_installed(name), reason=f"backend {name}: its package is not installed")
    return pytest.param(name, *args, marks=skip, id="-".join([name] + [str(a) for a in args]))


def _case_params():
    params = []
    for backend in ("torch", "onnxruntime", "openvino"):
        for path in CASE_FILES:
            if backend == "openvino" and path.parent.name not in OPENVINO_CASE_IMAGES:
                continue
            params.append(_backend_param(backend, path))
    return params


@lru_cache(maxsize=1)
def _model():
    return build_from_checkpoint(TINY_CHECKPOINT)[0]


@cache
def _backend(name: str):
    """One network backend (one ONNX Runtime session, one OpenVINO compiled model) per run."""
    return create_backend(name, _model(), device=torch.device("cpu"))


def _engine(backend: str, config: InferenceConfig) -> InferenceEngine:
    from dataclasses import replace

    return InferenceEngine(_model(), COCO, replace(config, backend=backend), backend=_backend(backend))


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


@lru_cache(maxsize=RAW_CACHE)
def _raw(backend: str, image: str, scales: tuple):
    """Network passes once per (backend, image, scales), flip included; settings share them, and
    so does test_golden_any_isa.py where it runs its cases in this process."""
    engine = _engine(backend, InferenceConfig(scales=scales, flip=True))
    geometry, inputs = engine.prepare(cv2.imread(str(SHARED / image)))
    (maps,), (raw,) = engine.infer_prepared([(geometry, inputs)], keep_raw=True)
    return geometry, raw


def _maps(backend: str, image: str, scales: tuple, flip: bool):
    """Aggregated maps for a setting, through the engine's own aggregation step."""
    geometry, raw = _raw(backend, image, scales)
    outs = [torch.cat([hm, tg]) for hm, tg in zip(raw.heatmaps, raw.tags)]
    outs_flip = [torch.cat([hm, tg]) for hm, tg in zip(raw.heatmaps_flip, raw.tags_flip)] if flip else None
    return aggregate_outputs(geometry, outs, outs_flip, torch.tensor(COCO.flip_index))[0]


def test_every_case_is_covered():
    assert len(CASE_FILES) >= 25


@pytest.mark.parametrize(
    "backend,case_file",
    [pytest.param(*p.values, marks=p.marks, id=f"{p.values[0]}-{p.values[1].parent.name}/{p.values[1].stem}") for p in _case_params()],
)
def test_case_matches_reference(backend, case_file):
    case = json.loads(case_file.read_text())
    config = _config(case)
    maps = _maps(backend, case["image"], config.scales, config.flip)
    geo = maps.geometry
    assert list(geo.base_size_wh) == case["base_size_wh"]
    assert list(geo.center) == case["center"]
    assert np.allclose(geo.scale, case["scale"], rtol=0, atol=1e-12)
    assert [list(si.size_wh) for si in geo.inputs] == case["input_sizes_wh"]

    cands = top_k(maps.heatmaps, maps.tags, config.max_people)
    want_val = np.array(case["topk_val"], dtype=np.float32)
    np.testing.assert_allclose(cands.val, want_val, rtol=0, atol=1e-5)
    _assert_same_candidates(backend, cands.val, cands.loc, want_val, np.array(case["topk_loc"]))

    poses = poses_from(group(maps, COCO, config), geo)
    people = case["people"]
    assert len(poses) == case["num_people"] == len(people)
    if backend != "torch":
        # Identical candidates, but adjust/refine may compare near-equal neighbours: allowed to
        # move a keypoint by at most one base-canvas pixel (then xfail), nothing else.
        moved = max((np.abs(g.keypoints[:, :2] - np.array(w["keypoints"])[:, :2]).max() for g, w in zip(poses, people)), default=0.0)
        canvas_px = max(geo.image_wh[0] / geo.base_size_wh[0], geo.image_wh[1] / geo.base_size_wh[1])
        if 1e-3 < moved <= canvas_px + 1e-3:
            for got, want in zip(poses, people):
                want_kpts = np.array(want["keypoints"])
                still = np.abs(got.keypoints[:, :2] - want_kpts[:, :2]).max(axis=1) <= 1e-3
                # A moved keypoint reads its score at its new place; the others keep theirs.
                np.testing.assert_allclose(got.keypoints[still, 2], want_kpts[still, 2], rtol=0, atol=1e-5)
            pytest.xfail(f"{backend}: same candidates, a keypoint moved {moved:.3f} px (<= 1 canvas pixel) by a near-tie in adjust/refine")
    for got, want in zip(poses, people):
        want_kpts = np.array(want["keypoints"])
        np.testing.assert_allclose(got.keypoints[:, :2], want_kpts[:, :2], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got.keypoints[:, 2], want_kpts[:, 2], rtol=0, atol=1e-5)
        assert abs(got.score - want["score"]) <= 1e-5


STAGES = [("a_s1_flip", (1.0,), 1e-4), ("c_ms_flip", (2.0, 1.0, 0.5), 2e-3)]


@pytest.mark.parametrize(
    "backend,name,scales,net_tol",
    [_backend_param(b, *stage) for b in ("torch", "onnxruntime", "openvino") for stage in STAGES],
)
def test_stage_by_stage(backend, name, scales, net_tol):
    meta = json.loads((GOLDEN / "stages" / f"stages_000000000785_{name}.json").read_text())
    z = np.load(GOLDEN / "stages" / f"stages_000000000785_{name}.npz")
    image = cv2.imread(str(SHARED / meta["image"]))
    config = InferenceConfig(scales=scales, flip=True, pose_nms=None)
    engine = _engine(backend, config)
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
            # Other runtimes: also 1e-4 relative (OpenVINO's tags of ~1.8 are 1.03e-4 away).
            rtol = 0 if backend == "torch" else 1e-4
            np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=net_tol, err_msg=f"{key}_s{i}")
    np.testing.assert_allclose(maps.heatmaps.numpy()[:, ::8, ::8], z["final_heatmaps_every8"][0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps.tags.numpy()[:, ::8, ::8], z["final_tags_every8"][0], rtol=0, atol=1e-4)

    cands = top_k(maps.heatmaps, maps.tags, 30)
    np.testing.assert_allclose(cands.val, z["topk_val_k"][0], rtol=0, atol=1e-5)
    _assert_same_candidates(backend, cands.val, cands.loc, z["topk_val_k"][0], z["topk_loc_k"][0])
    np.testing.assert_allclose(cands.tag, z["topk_tag_k"][0], rtol=0, atol=1e-4)
    joints = match_by_tag(cands, COCO, config)
    _assert_people(joints, z["grouped_matched"])
    joints = adjust(joints, maps.heatmaps)
    _assert_people(joints, z["grouped_adjusted"])
    np.testing.assert_allclose(person_scores(joints), z["scores"], rtol=0, atol=1e-5)
    joints = refine(joints, maps.heatmaps, maps.tags)
    _assert_people(joints, z["grouped_refined"])
    _assert_people(to_image_coords(joints, maps.geometry), z["preds"])


NEAR_TIE = 1e-5  # the fixtures' tolerance on heatmap values


def _near_tie_reorder(got_val, got_loc, want_val, want_loc, tol: float = NEAR_TIE) -> list[int] | None:
    """Joints whose top-k locations differ, if every difference is a near-tie; None otherwise.

    A wanted candidate at rank r counts as a near-tie when the same location appears in our
    top-k with a value within `tol` of the wanted value, or is missing from our top-k while
    its value is within `tol` of our last one (it fell off the end).
    """
    joints = []
    for k in range(want_loc.shape[0]):  # [K, top-k, 2]
        differs = np.flatnonzero((got_loc[k] != want_loc[k]).any(-1))
        if differs.size == 0:
            continue
        for r in differs:
            loc, val = want_loc[k, r], want_val[k, r]
            match = np.flatnonzero((got_loc[k] == loc).all(-1))
            if match.size:
                if abs(got_val[k, match[0]] - val) > tol:
                    return None
            elif abs(got_val[k, -1] - val) > tol:
                return None
        joints.append(k)
    return joints


def _assert_same_candidates(backend: str, got_val, got_loc, want_val, want_loc) -> None:
    """torch: identical top-k locations; other runtimes: identical, or xfail on near-ties only."""
    want_loc = np.asarray(want_loc)
    if backend == "torch" or np.array_equal(got_loc, want_loc):
        np.testing.assert_array_equal(got_loc, want_loc)
        return
    joints = _near_tie_reorder(got_val, got_loc, want_val, want_loc)
    assert joints is not None, f"{backend}: top-k locations differ beyond near-ties (values within {NEAR_TIE})"
    pytest.xfail(f"{backend}: near-equal peaks (within {NEAR_TIE}) reordered by float rounding at joints {joints}")


def _assert_people(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[:, :, :2], want[:, :, :2])  # quantised coordinates: exact
    np.testing.assert_allclose(got[:, :, 2:], want[:, :, 2:], rtol=0, atol=1e-4)
