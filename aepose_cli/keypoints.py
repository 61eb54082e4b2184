"""Keypoint metadata of the four datasets the published models were trained on.

Everything that depends on which joints a model predicts lives here and travels with the model:
names, the flip permutation used by the flip test, OKS sigmas, the skeleton drawn on images, the
order in which grouping visits the joints and whether COCO evaluation uses the annotated area.
Values follow mmpose 0.29's dataset configs (configs/_base_/datasets/coco.py, aic.py, mhp.py,
crowdpose.py); colours are stored as the reference passes them to OpenCV (so they are
interpreted as BGR, as the reference demo draws them).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

_GREEN = (0, 255, 0)
_ORANGE = (255, 128, 0)
_BLUE = (51, 153, 255)
_COLOURS = {"g": _GREEN, "o": _ORANGE, "b": _BLUE}


@dataclass(frozen=True)
class KeypointSet:
    """Joint metadata of one dataset; immutable so it can be shared between threads."""

    name: str
    names: tuple[str, ...]
    flip_index: tuple[int, ...]
    sigmas: tuple[float, ...]
    joint_colours: tuple[tuple[int, int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    link_colours: tuple[tuple[int, int, int], ...]
    grouping_order: tuple[int, ...]
    # xtcocotools' use_area: COCO uses the annotated area, AIC/MHP 0.53 * bbox area (xtcocotools' `COCOeval(use_area=...)`).
    use_area: bool
    # How the dataset is scored: xtcocotools' `keypoints` mode, or its `keypoints_crowd` mode
    # (CrowdPose: AP/AR over all people, then AP by the images' crowd index).
    evaluation: str = "keypoints"
    # How people call the dataset (messages, tables): "COCO", "CrowdPose".
    label: str = ""

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def __post_init__(self) -> None:
        k = len(self.names)
        for field_name in ("flip_index", "sigmas", "joint_colours", "grouping_order"):
            if len(getattr(self, field_name)) != k:
                raise ValueError(f"{self.name}: {field_name} has the wrong length")
        if len(self.skeleton) != len(self.link_colours):
            raise ValueError(f"{self.name}: skeleton and link colours differ in length")


def _links(spec: str) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
    """Parse 'a-b c' triples ("15-13 g, ...") into link and colour tuples."""
    links, colours = [], []
    for item in spec.split(","):
        pair, colour = item.split()
        a, b = pair.split("-")
        links.append((int(a), int(b)))
        colours.append(_COLOURS[colour])
    return tuple(links), tuple(colours)


def _joint_colours(codes: str) -> tuple[tuple[int, int, int], ...]:
    return tuple(_COLOURS[c] for c in codes.split())


_COCO_LINKS = _links(
    "15-13 g, 13-11 g, 16-14 o, 14-12 o, 11-12 b, 5-11 b, 6-12 b, 5-6 b, 5-7 g, 6-8 o, 7-9 g, "
    "8-10 o, 1-2 b, 0-1 b, 0-2 b, 1-3 b, 2-4 b, 3-5 b, 4-6 b"
)
COCO = KeypointSet(
    label="COCO",
    name="coco",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107,
        0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    joint_colours=_joint_colours("b b b b b g o g o g o g o g o g o"),
    skeleton=_COCO_LINKS[0],
    link_colours=_COCO_LINKS[1],
    # The order `HeatmapParser` visits joints in for COCO: hips before elbows.
    grouping_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16),
    use_area=True,
)

_AIC_LINKS = _links(
    "2-1 o, 1-0 o, 0-13 b, 13-3 b, 3-4 g, 4-5 g, 8-7 o, 7-6 o, 6-9 b, 9-10 g, 10-11 g, "
    "12-13 b, 0-6 b, 3-9 b"
)
AIC = KeypointSet(
    label="AIC",
    name="aic",
    names=(
        "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
        "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
        "left_ankle", "head_top", "neck",
    ),
    flip_index=(3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8, 12, 13),
    sigmas=(
        0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
        0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173,
    ),
    joint_colours=_joint_colours("o o o g g g o o o g g g b b"),
    skeleton=_AIC_LINKS[0],
    link_colours=_AIC_LINKS[1],
    grouping_order=tuple(range(14)),
    use_area=False,
)

_MHP_LINKS = _links(
    "0-1 o, 1-2 o, 2-6 o, 6-3 g, 3-4 g, 4-5 g, 6-7 b, 7-8 b, 8-9 b, 8-12 o, 12-11 o, "
    "11-10 o, 8-13 g, 13-14 g, 14-15 g"
)
MHP = KeypointSet(
    label="MHP",
    name="mhp",
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
        "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    ),
    flip_index=(5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10),
    # Shoulders 0.179: the reference's typo, kept because the published numbers used it.
    sigmas=(
        0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072,
        0.179, 0.179, 0.072, 0.062,
    ),
    joint_colours=_joint_colours("o o o g g g b b b b o o o g g g"),
    skeleton=_MHP_LINKS[0],
    link_colours=_MHP_LINKS[1],
    grouping_order=tuple(range(16)),
    use_area=False,
)

_CROWDPOSE_LINKS = _links(
    "10-8 g, 8-6 g, 11-9 o, 9-7 o, 6-7 b, 0-6 b, 1-7 b, 0-1 b, 0-2 g, 1-3 o, 2-4 g, 3-5 o, "
    "12-13 b, 1-13 b, 0-13 b"
)
# CrowdPose (Li et al., CVPR 2019) as mmpose 0.29's crowdpose.py describes it. Its evaluation
# is xtcocotools' `keypoints_crowd` mode with use_area=False (AP, AP .5, AP .75, AR, AR .5,
# AR .75, and AP easy / medium / hard by the images' crowd index).
CROWDPOSE = KeypointSet(
    label="CrowdPose",
    name="crowdpose",
    names=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle", "top_head", "neck",
    ),
    flip_index=(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    sigmas=(
        0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
        0.079, 0.079,
    ),
    joint_colours=_joint_colours("b b b b b g o g o g o g o g"),
    skeleton=_CROWDPOSE_LINKS[0],
    link_colours=_CROWDPOSE_LINKS[1],
    grouping_order=tuple(range(14)),  # HeatmapParser reorders only K = 17
    use_area=False,
    evaluation="keypoints_crowd",
)

# The sets the commands offer (`--keypoints`), by name.
KEYPOINT_SETS: dict[str, KeypointSet] = {"coco": COCO, "aic": AIC, "mhp": MHP, "crowdpose": CROWDPOSE}


def keypoint_set(name: str) -> KeypointSet:
    """The keypoint set called `name` ('coco', 'aic', 'mhp', 'crowdpose')."""
    try:
        return KEYPOINT_SETS[name.lower()]
    except KeyError:
        known = ", ".join(KEYPOINT_SETS)
        raise ConfigError(f"unknown keypoint set {name!r} (known: {known})") from None


def keypoint_sets_with(num_joints: int) -> list[KeypointSet]:
    """Every keypoint set of `num_joints` joints (14: AIC and CrowdPose)."""
    return [ks for ks in KEYPOINT_SETS.values() if ks.num_joints == num_joints]


def keypoint_set_for(num_joints: int, source: str = "the checkpoint") -> KeypointSet:
    """The keypoint set a model with `num_joints` heatmaps predicts (17 COCO, 16 MHP); 14 joints
    are AIC's or CrowdPose's, which the number alone cannot tell: ConfigError asking for
    `--keypoints` then (`source` names what has that many)."""
    sets = keypoint_sets_with(num_joints)
    if len(sets) == 1:
        return sets[0]
    if not sets:
        raise ConfigError(f"no keypoint set has {num_joints} joints (COCO 17, MHP 16, AIC and CrowdPose 14)")
    names = "|".join(ks.name for ks in sets)
    raise ConfigError(
        f"{source} has {num_joints} keypoints, which {' and '.join(ks.label for ks in sets)} both have, "
        f"and does not say which: pass --keypoints {names}"
    )
