"""Every family through the real path (`PoseEstimator`: model resolution, preprocessing, batched
network passes with the flipped image in the same batch, aggregation, grouping, mapping back)
against mmpose 0.29's recorded `forward_test` (tests/fixtures/family/, see family_cases.py for
which cases run in CI and which with AEPOSE_TEST_FULL_FAMILY=1).

Checked: the resolved input size, UDP flag and keypoint set; the aggregated maps at the
recorded positions to 1e-4 (as the golden suite checks them); the top-k candidates; the grouped people, their scores and their
keypoints in image pixels (within 1e-3 px, scores 1e-5).

The reference runs the original and the flipped image as two batches of one; aepose as one
batch of two, whose convolutions round differently (~1e-6). Without UDP that changes nothing
here. With UDP the adjust step is a Newton step on log-heatmaps (DARK), whose result is a
continuous function of the maps and can be ill-conditioned (a joint that is no peak of the
blurred map, or a missing joint at (0, 0) on a flat map): a 1e-7 change of the maps moves it
by up to pixels, in the reference as much as here. Such a difference is accepted only where the
step itself is shown to be that sensitive: it moves at least as far under 1e-6 noise on the
heatmaps (ten times the largest difference batching makes in the aggregated maps), and then
the case is an xfail naming the joints; refine is checked from the reference's own adjusted
people, and the final keypoints of the other people as usual.
"""
from __future__ import annotations

import functools

import family_cases as fc
import numpy as np
import pytest
import torch

from aepose_cli import grouping
from aepose_cli.estimator import PoseEstimator
from aepose_cli.udp import dark_udp_adjust, dark_udp_log_maps

from paths import needs_shared

pytestmark = [needs_shared, pytest.mark.slow]

# Heatmap noise under which a DARK step must move at least as far as it differs.
DARK_NOISE = 1e-6
DARK_DRAWS = 8


@functools.lru_cache(maxsize=2)
def _estimator(name: str) -> PoseEstimator:
    """The estimator of a case: settings the checkpoint does not say are passed as options."""
    case, family = fc.case(name), fc.family(name)
    options = {}
    if case["use_udp"]:
        options["use_udp"] = True
    if family["image_size"] != 512:
        options["input_size"] = family["image_size"]
    if family["dataset"] == "aic":
        options["keypoints"] = "aic"  # the 14-joint checkpoint was saved with CrowdPose's config
    return PoseEstimator(
        checkpoint=fc.checkpoint(name), scales=case["scales"], flip=case["flip_test"],
        detection_threshold=case["detection_threshold"], pose_nms=None, **options,
    )


def dark_sensitivity(coords: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """How far each DARK step of `coords` `[P, K, 2]` moves, at most, when the heatmaps get
    `DARK_NOISE` Gaussian noise (`DARK_DRAWS` fixed draws): `[P, K]`."""
    base = dark_udp_adjust(coords, dark_udp_log_maps(heatmaps))
    rng = np.random.default_rng(0)
    spread = np.zeros(coords.shape[:2], dtype=np.float32)
    for _ in range(DARK_DRAWS):
        noisy = heatmaps + DARK_NOISE * rng.standard_normal(heatmaps.shape).astype(np.float32)
        moved = np.abs(dark_udp_adjust(coords, dark_udp_log_maps(noisy)) - base).max(axis=-1)
        spread = np.maximum(spread, moved)
    return spread


@pytest.mark.parametrize("name", fc.CASES)
def test_case_through_the_estimator(name):
    case, family, rec = fc.case(name), fc.family(name), fc.arrays(name)
    estimator = _estimator(name)
    assert (estimator.config.input_size, estimator.config.udp, estimator.keypoints.name) == (
        family["image_size"], case["use_udp"], family["dataset"]
    )
    maps = estimator.maps(fc.image(name))
    assert list(maps.heatmaps.shape) == case["map_shape"] and maps.tags.shape[-1] == case["tag_dim"]
    k, y, x = rec["map_positions"].T
    np.testing.assert_allclose(maps.heatmaps.numpy()[k, y, x], rec["map_heatmaps"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(maps.tags.numpy()[k, y, x], rec["map_tags"], rtol=0, atol=1e-4)
    cands = grouping.top_k(maps.heatmaps, maps.tags, estimator.config.max_people)
    np.testing.assert_allclose(cands.val, rec["topk_val"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cands.loc, rec["topk_loc"])

    prefix = "copy_" if case["use_udp"] else ""  # UDP: the reference as on a GPU (docs/fidelity.md)
    poses = estimator.poses_from_maps(maps)
    want = rec[prefix + "preds"]
    assert len(poses) == want.shape[0] == case["num_people"]
    got = np.stack([p.keypoints for p in poses]) if poses else np.zeros((0, want.shape[1], 3), np.float32)
    np.testing.assert_allclose([p.score for p in poses], rec[prefix + "scores"], rtol=0, atol=1e-5)
    compared = np.ones(len(poses), dtype=bool)
    explained = []
    if case["use_udp"]:
        matched = grouping.match_by_tag(cands, estimator.keypoints, estimator.config)
        np.testing.assert_allclose(matched, rec[prefix + "matched"], rtol=0, atol=1e-5)
        adjusted = grouping.adjust_udp(matched.copy(), maps.heatmaps)
        differs = np.abs(adjusted[..., :2] - rec[prefix + "adjusted"][..., :2]).max(axis=-1)
        sensitivity = dark_sensitivity(matched[..., :2], maps.heatmaps.numpy())
        # What moves a keypoint by 1e-3 image pixels on the heatmap grid the step works on.
        grid_px = max(s / (n - 1) for s, n in zip(maps.geometry.scale, (maps.heatmaps.shape[2], maps.heatmaps.shape[1])))
        for p, j in np.argwhere(differs > 1e-3 / grid_px):
            assert differs[p, j] <= sensitivity[p, j], (
                f"person {p} joint {j}: DARK step {differs[p, j]:.4g} px from the reference's, but it moves only "
                f"{sensitivity[p, j]:.3g} px under {DARK_NOISE:g} heatmap noise"
            )
            explained.append(f"p{p}/j{j} {differs[p, j]:.3g} px (step moves {sensitivity[p, j]:.3g} px under {DARK_NOISE:g} noise)")
            compared[p] = False
        # Refine and the mapping back, from the reference's own adjusted people.
        refined = grouping.refine(rec[prefix + "adjusted"].copy(), maps.heatmaps, maps.tags, maps.tags_lowres, offset=0.0)
        np.testing.assert_allclose(refined, rec[prefix + "refined"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[compared], want[compared][..., :3], rtol=0, atol=1e-3)
    if explained:
        pytest.xfail(f"{len(explained)} ill-conditioned DARK step(s) differ, as 1e-6 noise moves them: " + "; ".join(explained[:4]))


def test_the_ci_subset_covers_every_family_and_setting():
    families = {fc.case(n)["family"] for n in fc.CI_CASES}
    assert families == set(fc.INDEX["families"])
    per_family = {}
    for n in fc.CI_CASES:
        per_family.setdefault(fc.case(n)["family"], set()).add(fc.case(n)["setting"])
    for name, settings in per_family.items():
        if name not in ("higherhrnet_crowdpose", "higherhrnet_aic", "higherhrnet_coco640"):
            assert {"a_s1_flip", "b_s1_noflip"} <= settings, name
    assert sum(fc.case(n)["setting"].startswith("c_ms") for n in fc.CI_CASES) >= 2
    assert set(fc.CI_CASES) <= set(fc.ALL_CASES)


def test_udp_on_the_gpu_and_the_cpu_reference_differ_only_in_refine():
    """The default follows the reference on a GPU (refine reads the heatmaps); its CPU run
    refines on the log-maps its DARK step left behind. Both were recorded: the people after
    matching and adjust are the same, the refined ones differ (test_family_cases.py pins each)."""
    rec = fc.arrays("hrnet_udp_coco__000000000802__b_s1_noflip")
    np.testing.assert_array_equal(rec["cpu_adjusted"], rec["copy_adjusted"])
    assert not np.array_equal(rec["cpu_refined"], rec["copy_refined"])
    assert torch.float32 == torch.from_numpy(rec["copy_refined"]).dtype
