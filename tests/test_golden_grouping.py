"""Grouping parity with given maps (golden/grouping): must match the reference exactly.

Each fixture holds what a perfect network would output at scale 1 without flip for a real
COCO image (Gaussian heatmaps at annotated keypoints, constant tags per person); the maps go
through the reference's aggregation and post-processing in place of the network.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aepose_cli.config import InferenceConfig
from aepose_cli.grouping import group, to_image_coords
from aepose_cli.inference import aggregate_outputs
from aepose_cli.keypoints import COCO
from aepose_cli.preprocess import image_geometry

from paths import GOLDEN, SHARED, require_shared

require_shared()
pytestmark = pytest.mark.slow

EXPECTED = json.loads((GOLDEN / "grouping" / "expected_predictions.json").read_text())
CONFIG = InferenceConfig(scales=(1.0,), flip=False, pose_nms=None)


def test_every_fixture_is_listed():
    npz_ids = sorted(p.stem for p in (GOLDEN / "grouping").glob("*.npz"))
    assert npz_ids == sorted(EXPECTED) and len(npz_ids) >= 30


@pytest.mark.parametrize("image_id", sorted(EXPECTED, key=int))
def test_grouping_matches_reference_exactly(image_id):
    want = EXPECTED[image_id]
    raw = np.load(GOLDEN / "grouping" / f"{image_id}.npz")["raw"].astype(np.float32)
    h4, w4 = raw.shape[2:]
    wb, hb = want["base_size_wh"]
    assert (w4 * 4, h4 * 4) == (wb, hb)
    # Original image size is not stored; the geometry only needs base size, centre and scale,
    # which we recompute from the image file to check them too.
    import cv2

    img = cv2.imread(str(SHARED / "data" / "coco-mini-val2017" / "val2017" / want["file_name"]))
    geometry = image_geometry(img.shape[1], img.shape[0], (1.0,))
    assert list(geometry.base_size_wh) == want["base_size_wh"]
    assert list(geometry.center) == want["center"]
    assert np.allclose(geometry.scale, want["scale"], rtol=0, atol=1e-12)
    maps, _ = aggregate_outputs(geometry, [torch.from_numpy(raw[0])], None, torch.tensor(COCO.flip_index))
    grouped = group(maps, COCO, CONFIG)
    preds = to_image_coords(grouped.joints, geometry)
    expected_preds = np.array(want["preds"], dtype=np.float32).reshape(-1, COCO.num_joints, 4)
    assert preds.shape == expected_preds.shape
    np.testing.assert_array_equal(preds, expected_preds)
    np.testing.assert_array_equal(grouped.scores, np.array(want["scores"], dtype=np.float32))
