"""Keypoint sets against mmpose 0.29's own `DatasetInfo` (recorded in
tests/fixtures/family/dataset_info.json by tests/fixtures/record_family.py): names, flip
permutation, sigmas, skeleton, colours and the joint order grouping visits, for CrowdPose and
the three sets the published HRNet-AE models use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from aepose_cli.errors import ConfigError
from aepose_cli.keypoints import AIC, COCO, CROWDPOSE, KEYPOINT_SETS, MHP, keypoint_set, keypoint_set_for

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


def test_crowdpose_is_offered_and_evaluated_in_crowd_mode_without_annotated_area():
    assert CROWDPOSE.num_joints == 14 and CROWDPOSE.use_area is False
    assert CROWDPOSE.evaluation == "keypoints_crowd" and {AIC.evaluation, COCO.evaluation, MHP.evaluation} == {"keypoints"}
    assert keypoint_set("crowdpose") is CROWDPOSE and KEYPOINT_SETS["crowdpose"] is CROWDPOSE


def test_a_joint_count_names_its_set_unless_two_sets_share_it():
    assert keypoint_set_for(17) is COCO and keypoint_set_for(16) is MHP
    with pytest.raises(ConfigError) as info:
        keypoint_set_for(14, "my.pth")
    assert str(info.value) == "my.pth has 14 keypoints, which AIC and CrowdPose both have, and does not say which: pass --keypoints aic|crowdpose"
    with pytest.raises(ConfigError, match="no keypoint set has 15 joints"):
        keypoint_set_for(15)
