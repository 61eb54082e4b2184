"""The family fixtures (tests/fixtures/family/, recorded from mmpose 0.29 by
tests/fixtures/record_family.py) as the family tests read them, and which cases run where.

Every case runs when `AEPOSE_TEST_FULL_FAMILY=1` (about 15 minutes on two cores); otherwise a
representative subset (`CI_CASES`): each family's default setting (scale 1, flip) and no flip
on one image, multi-scale on two, CrowdPose and AIC once (docs/development.md). The
library-level pins of the reference's two UDP variants (its CPU run and its GPU run) run in CI
on `UDP_PIN_CASES`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from paths import SHARED

FIXTURES = Path(__file__).parent / "fixtures" / "family"
INDEX = json.loads((FIXTURES / "cases.json").read_text())
FULL = os.environ.get("AEPOSE_TEST_FULL_FAMILY") == "1"

CI_CASES = (
    "higherhrnet_coco__000000000785__a_s1_flip",
    "higherhrnet_coco__000000000785__b_s1_noflip",
    "higherhrnet_coco640__000000000785__a_s1_flip",
    "higherhrnet_udp_coco__000000000785__a_s1_flip",
    "higherhrnet_udp_coco__000000000802__b_s1_noflip",
    "hrnet_udp_coco__000000000802__a_s1_flip",
    "hrnet_udp_coco__000000000802__b_s1_noflip",
    "res50_coco__000000000785__a_s1_flip",
    "res50_coco__000000000785__b_s1_noflip",
    "res50_coco__000000000785__c_ms_flip_thr003",
    "mobilenetv2_coco__000000000785__a_s1_flip",
    "mobilenetv2_coco__000000000785__b_s1_noflip",
    "hourglass_coco__000000000802__a_s1_flip",
    "hourglass_coco__000000000802__b_s1_noflip",
    "higherhrnet_crowdpose__106848__a_s1_flip",
    "higherhrnet_aic__054d9ce9201beffc76e5ff2169d2af2f027002ca__c_ms_flip",
)
UDP_PIN_CASES = (
    "hrnet_udp_coco__000000000802__b_s1_noflip",
    "higherhrnet_udp_coco__000000000802__b_s1_noflip",
)
ALL_CASES = tuple(sorted(INDEX["cases"]))
CASES = ALL_CASES if FULL else CI_CASES


def case(name: str) -> dict:
    return INDEX["cases"][name]


def family(name: str) -> dict:
    return INDEX["families"][case(name)["family"]]


def arrays(name: str):
    return np.load(FIXTURES / case(name)["arrays"])


def checkpoint(name: str) -> Path:
    """The checkpoint a case was recorded with (HRNet-UDP: the golden tiny HRNet in ../shared)."""
    path = family(name)["checkpoint"]
    return SHARED / path.removeprefix("shared:") if path.startswith("shared:") else FIXTURES / path


def image(name: str) -> Path:
    return SHARED / case(name)["image"]
