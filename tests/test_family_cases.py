"""Library-level parity with mmpose 0.29 for every family on real photos: preprocessing (default
and UDP), the network's raw outputs (one image per pass, as the reference runs them), the
aggregation of multi-output heads (HigherHRNet's two resolutions, Hourglass-AE's stacks),
top-k, matching, adjust (quarter-pixel or UDP's DARK step), refine and the mapping back to
image pixels, piece by piece. The same cases through the real path (`PoseEstimator`) are
test_family_pipeline.py's.

The geometry of every case runs always; the network and grouping of every case only with
AEPOSE_TEST_FULL_FAMILY=1 (`family_cases.py`), otherwise those of `UDP_PIN_CASES`, which pin
both of the reference's UDP variants: on a CPU its refine reads the log-maps its DARK step left
in the heatmaps' memory (`cpu_*`), on a GPU the heatmaps (`copy_*`, aepose's default).

Fixtures: tests/fixtures/family/cases.json + cases/*.npz, recorded by
tests/fixtures/record_family.py from the reference's `forward_test` (no pose NMS), on the
random-weight checkpoints of tests/fixtures/family/checkpoints/ (HRNet-UDP: the golden tiny
HRNet in ../shared). Each case is one family x image x setting (scales 1 or 2,1,0.5, flip on or
off). The pieces under test are `aepose_cli.aggregation`, `aepose_cli.udp` and `aepose_cli.model`;
grouping's matching, adjust and refine are today's `aepose_cli.grouping` (UDP's refine is
today's refine without its +0.5 offset, see `_refine_udp`).
"""
from __future__ import annotations

import functools

import cv2
import family_cases
import numpy as np
import pytest
import torch

from aepose_cli import grouping
from aepose_cli.aggregation import AggregationSettings, aggregate_image
from aepose_cli.config import InferenceConfig
from aepose_cli.keypoints import AIC, COCO, CROWDPOSE
from aepose_cli.model import build_from_checkpoint
from aepose_cli.preprocess import bgr_to_rgb, image_geometry, to_normalised_tensor, warp_image
from aepose_cli.udp import dark_udp_adjust, dark_udp_log_maps, udp_image_geometry, udp_to_image_coords

from paths import SHARED, needs_shared

pytestmark = needs_shared

FIXTURES = family_cases.FIXTURES
INDEX = family_cases.INDEX
KEYPOINTS = {"coco": COCO, "aic": AIC, "crowdpose": CROWDPOSE}


CASE_NAMES = sorted(INDEX["cases"])
# The network and grouping: every case with AEPOSE_TEST_FULL_FAMILY=1, else the UDP pins.
RUN_NAMES = list(family_cases.ALL_CASES if family_cases.FULL else family_cases.UDP_PIN_CASES)


@functools.lru_cache(maxsize=4)
def _model(checkpoint: str):
    path = SHARED / checkpoint.removeprefix("shared:") if checkpoint.startswith("shared:") else FIXTURES / checkpoint
    model, _ = build_from_checkpoint(path, families=None)
    return model


def _geometry(case: dict, family: dict, w: int, h: int):
    scales = tuple(float(s) for s in case["scales"])
    if case["use_udp"]:
        return udp_image_geometry(w, h, scales, family["image_size"])
    return image_geometry(w, h, scales, family["image_size"])


def _inputs(name: str):
    case = INDEX["cases"][name]
    family = INDEX["families"][case["family"]]
    image = cv2.imread(str(SHARED / case["image"]), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    geometry = _geometry(case, family, w, h)
    rgb = bgr_to_rgb(image)
    return geometry, [to_normalised_tensor(warp_image(rgb, si)) for si in geometry.inputs]


@pytest.fixture(scope="module", params=RUN_NAMES)
def run(request):
    """Everything aepose computes for one case up to the aggregated maps, once per case (a
    module-scoped parametrised fixture: pytest runs each case's tests together)."""
    name = request.param
    case = INDEX["cases"][name]
    family = INDEX["families"][case["family"]]
    model = _model(family["checkpoint"])
    geometry, inputs = _inputs(name)
    outs, outs_flip = [], []
    with torch.no_grad():
        for x in inputs:
            outs.append(model.raw_outputs(x[None]))
            if case["flip_test"]:
                outs_flip.append(model.raw_outputs(torch.flip(x[None], [3])))
    test_cfg = family["test_cfg"]
    settings = AggregationSettings(test_cfg["project2image"], test_cfg.get("align_corners", True))
    kps = KEYPOINTS[family["dataset"]]
    maps = aggregate_image(
        outs, outs_flip if case["flip_test"] else None, [si.scale for si in geometry.inputs],
        geometry.base_size_wh, model.num_joints, kps.flip_index, model.spec.outputs,
        model.spec.test_outputs, settings,
    )
    return name, case, geometry, maps, model, kps


def _arrays(name: str):
    return np.load(FIXTURES / INDEX["cases"][name]["arrays"])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_geometry_and_network_input(name):
    """Sizes, centre, scale, every warp matrix and the normalised input, without the network."""
    case = INDEX["cases"][name]
    geometry, inputs = _inputs(name)
    assert list(geometry.base_size_wh) == case["base_size_wh"]
    assert list(geometry.center) == case["center"]
    assert list(geometry.scale) == pytest.approx(case["scale"], rel=0, abs=0)
    assert [list(si.size_wh) for si in geometry.inputs] == case["input_sizes_wh"]
    assert len(case["warps"]) == len(geometry.inputs)
    for si, warp in zip(geometry.inputs, case["warps"]):
        assert list(si.size_wh) == warp["size_wh"] and warp["flags"] == cv2.INTER_LINEAR
        assert np.array_equal(si.matrix, np.array(warp["matrix"])), (si.matrix, warp["matrix"])
    np.testing.assert_array_equal(inputs[0][:, ::16, ::16].numpy(), _arrays(name)["input_s0_every16"])


@pytest.mark.slow
def test_aggregated_maps_and_candidates(run):
    name, case, _, maps, model, _ = run
    family = INDEX["families"][case["family"]]
    rec = _arrays(name)
    assert list(maps.heatmaps.shape) == case["map_shape"] and maps.tags.shape[-1] == case["tag_dim"]
    assert AggregationSettings.reference(model.family, case["use_udp"]) == AggregationSettings(
        family["test_cfg"]["project2image"], family["test_cfg"].get("align_corners", True)
    )
    k, y, x = rec["map_positions"].T
    np.testing.assert_allclose(maps.heatmaps.numpy()[k, y, x], rec["map_heatmaps"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(maps.tags.numpy()[k, y, x], rec["map_tags"], rtol=0, atol=1e-5)
    cands = grouping.top_k(maps.heatmaps, maps.tags, 30)
    np.testing.assert_allclose(cands.val, rec["topk_val"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cands.loc, rec["topk_loc"])
    np.testing.assert_allclose(cands.tag, rec["topk_tag"], rtol=0, atol=1e-5)


def _config(case: dict) -> InferenceConfig:
    return InferenceConfig(
        scales=tuple(float(s) for s in case["scales"]), flip=case["flip_test"],
        detection_threshold=case["detection_threshold"], pose_nms=None,
    )


def _refine_udp(joints: np.ndarray, heatmaps: torch.Tensor, tags: torch.Tensor) -> np.ndarray:
    """The reference's refine with use_udp: no +0.5 offset."""
    return grouping.refine(joints.copy(), heatmaps, tags, offset=0.0)


@pytest.mark.slow
def test_people(run):
    name, case, geometry, maps, _, kps = run
    rec = _arrays(name)
    cands = grouping.top_k(maps.heatmaps, maps.tags, 30)
    matched = grouping.match_by_tag(cands, kps, _config(case))
    prefixes = ["cpu_", "copy_"] if case["use_udp"] else [""]
    for prefix in prefixes:
        np.testing.assert_array_equal(matched, rec[prefix + "matched"])
    if not case["use_udp"]:
        adjusted = grouping.adjust(matched.copy(), maps.heatmaps)
        np.testing.assert_array_equal(adjusted, rec["adjusted"])
        np.testing.assert_allclose(grouping.person_scores(adjusted), rec["scores"], rtol=0, atol=1e-6)
        refined = grouping.refine(adjusted.copy(), maps.heatmaps, maps.tags)
        np.testing.assert_array_equal(refined, rec["refined"])
        preds = grouping.to_image_coords(refined, geometry)
        np.testing.assert_allclose(preds, rec["preds"], rtol=0, atol=1e-3)
        assert preds.shape[0] == case["num_people"]
        return
    log_maps = dark_udp_log_maps(maps.heatmaps.numpy())
    adjusted = matched.copy()
    adjusted[..., :2] = dark_udp_adjust(matched[..., :2], log_maps)
    for prefix in prefixes:
        np.testing.assert_allclose(adjusted, rec[prefix + "adjusted"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(grouping.person_scores(adjusted), rec[prefix + "scores"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(grouping.adjust_udp(matched.copy(), maps.heatmaps), adjusted, rtol=0, atol=0)
    heatmap_size_wh = (maps.heatmaps.shape[2], maps.heatmaps.shape[1])
    # On a CPU the reference refines on the maps its DARK step left behind; on a GPU on the maps.
    for prefix, refine_maps in (("cpu_", torch.from_numpy(log_maps)), ("copy_", maps.heatmaps)):
        refined = _refine_udp(adjusted, refine_maps, maps.tags)
        np.testing.assert_allclose(refined, rec[prefix + "refined"], rtol=0, atol=1e-5)
        preds = udp_to_image_coords(refined, geometry.scale, heatmap_size_wh)
        np.testing.assert_allclose(preds, rec[prefix + "preds"], rtol=0, atol=1e-3)
    assert rec["cpu_preds"].shape[0] == case["num_people"]


def test_udp_mapping_back_equals_the_reference_on_recorded_people():
    """`udp_to_image_coords` alone, on the reference's own refined people (no network)."""
    checked = 0
    for name, case in INDEX["cases"].items():
        if not case["use_udp"]:
            continue
        rec = _arrays(name)
        h, w = case["map_shape"][1:]
        for prefix in ("cpu_", "copy_"):
            got = udp_to_image_coords(rec[prefix + "refined"], tuple(case["scale"]), (w, h))
            np.testing.assert_array_equal(got, rec[prefix + "preds"])
            checked += rec[prefix + "refined"].shape[0]
    assert checked > 0

