"""Keypoint sets against mmpose 0.29's own `DatasetInfo` (recorded in
tests/fixtures/family/dataset_info.json by tests/fixtures/record_family.py): names, flip
permutation, sigmas, skeleton, colours and the joint order grouping visits, for CrowdPose and
the three sets the published HRNet-AE models use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aepose_cli.keypoints import AIC, COCO, CROWDPOSE, KEYPOINT_SETS, MHP, keypoint_set_for

INFO = json.loads((Path(__file__).parent / "fixtures" / "family" / "dataset_info.json").read_text())


@pytest.mark.parametrize("kps", [COCO, AIC, MHP, CROWDPOSE], ids=lambda k: k.name)
def test_keypoint_set_equals_the_reference_dataset_info(kps):
    ref = INFO[kps.name]
    assert list(kps.names) == ref["names"]
    assert list(kps.flip_index) == ref["flip_index"]
    assert list(kps.sigmas) == ref["sigmas"]
    assert [list(link) for link in kps.skeleton] == ref["skeleton"]
    assert [list(c) for c in kps.joint_colours] == ref["joint_colours"]
    assert [list(c) for c in kps.link_colours] == ref["link_colours"]
    assert list(kps.grouping_order) == ref["grouping_order"]
    # The flip permutation is the pairs' swap, each pair both ways, the rest fixed.
    swapped = list(range(kps.num_joints))
    for a, b in ref["flip_pairs"]:
        swapped[a], swapped[b] = b, a
    assert list(kps.flip_index) == swapped


def test_crowdpose_is_evaluated_without_annotated_area_and_14_joints_stay_aic():
    assert CROWDPOSE.num_joints == 14 and CROWDPOSE.use_area is False
    # Not offered by the commands until its crowd-index evaluation exists; 14 joints keep
    # meaning AIC, the only 14-joint set of today's zoo.
    assert "crowdpose" not in KEYPOINT_SETS
    assert keypoint_set_for(14) is AIC
