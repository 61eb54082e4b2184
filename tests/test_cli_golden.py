"""The command line against the reference's recorded people (golden/cases), through the
installed `aepose` console script, at the commands' defaults and with `--scales 2,1,0.5`.

The golden tests rebuild the maps through library calls and the other CLI tests run at reduced
scales against the library; here the real commands meet the reference's files: `aepose image`,
`aepose folder` and `aepose video` on golden images (000000000785 and 000000196141: people at
scale 1 and at 2,1,0.5), with the tiny checkpoint, on the exact torch path (oneDNN pinned to
the fixtures' AVX2 kernels by conftest.py; the children inherit it).

The cases were recorded without pose NMS; the commands apply OKS pose NMS 0.9 by default. So a
run at defaults is compared with the reference's people after the library's own `oks_nms`
(pinned against the reference's inference API by test_estimator.py and test_oks.py), and
`folder` runs with `--no-pose-nms` against the reference's people as they are. `image` runs at
its defaults; `folder` and `video` at their defaults and with `--scales 2,1,0.5` (multi-scale
runs cost ~10x a scale-1 run here, so `image`, whose path `folder` shares, runs only at scale 1).

The JSON keeps every float32 exactly (`io/coco_json.py`), and the cases hold float32 values, so
the comparison is the golden README's: same people in the same order, keypoints within 1e-3 px,
keypoint and person scores within 1e-5 (`golden_ties.COORD_TOL`, `HEAT_TIE`).

For `video`, a lossless FFV1 video is made at test time from one golden image's pixels (two
identical frames, so the network sees them in one batch, as the command batches frames); its decoded frames are checked to equal the image bit for bit before the
run, so every frame must give the golden people.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from aepose_cli.io.decode import VideoSource
from aepose_cli.keypoints import COCO
from aepose_cli.oks import oks_nms

from cli_helpers import TINY_CHECKPOINT, describe, keypoint_array, load_json, run_console_script
from golden_ties import COORD_TOL, HEAT_TIE
from paths import GOLDEN, SHARED, needs_shared

pytestmark = [pytest.mark.cli, pytest.mark.slow, needs_shared]

IMAGES = ("000000000785", "000000196141")
VIDEO_IMAGE = "000000196141"
VIDEO_FRAMES = 2
# The command-line setting and the golden case it must reproduce.
SETTINGS = {"default": ([], "a_s1_flip"), "multi-scale": (["--scales", "2,1,0.5"], "c_ms_flip")}
# --device cpu: the default `auto` would take a GPU where there is one, and the cases are CPU numbers.
MODEL = ["--checkpoint", TINY_CHECKPOINT, "--device", "cpu"]


def golden_case(image: str, setting: str) -> dict:
    return json.loads((GOLDEN / "cases" / image / f"{setting}.json").read_text())


def golden_people(case: dict, *, pose_nms: bool) -> list[dict]:
    """The reference's people in its order; with `pose_nms`, those the library's OKS NMS at the
    commands' default threshold keeps, in its selection order (as the commands write them)."""
    people = case["people"]
    if not pose_nms or len(people) < 2:
        return people
    keypoints = np.array([p["keypoints"] for p in people], dtype=np.float32)
    spans = keypoints[:, :, :2].max(axis=1) - keypoints[:, :, :2].min(axis=1)
    # Pose.area: the keypoint box's w * h in float64 of the float32 coordinates.
    areas = np.array([float(w) * float(h) for w, h in spans.astype(np.float64)], dtype=np.float32)
    scores = np.array([p["score"] for p in people], dtype=np.float32)
    keep = oks_nms(keypoints, scores, areas, COCO.sigmas, 0.9)
    return [people[i] for i in keep]


def assert_reference_people(annotations: list[dict], expected: list[dict], what: str) -> None:
    assert len(annotations) == len(expected), f"{what}: {len(annotations)} people, the reference {len(expected)}"
    for i, (got, want) in enumerate(zip(annotations, expected)):
        ours, theirs = keypoint_array(got), np.array(want["keypoints"])
        xy = np.abs(ours[:, :2] - theirs[:, :2]).max()
        assert xy <= COORD_TOL, f"{what}, person {i}: keypoints {xy:.3g} px from the reference"
        score = np.abs(ours[:, 2] - theirs[:, 2]).max()
        assert score <= HEAT_TIE, f"{what}, person {i}: keypoint scores {score:.3g} from the reference"
        assert abs(got["score"] - want["score"]) <= HEAT_TIE, f"{what}, person {i}: score {got['score']} vs {want['score']}"


def annotations_per_image(coco_json: dict) -> dict[str, list[dict]]:
    ids = {image["id"]: image["file_name"] for image in coco_json["images"]}
    grouped: dict[str, list[dict]] = {name: [] for name in ids.values()}
    for annotation in coco_json["annotations"]:
        grouped[ids[annotation["image_id"]]].append(annotation)
    return grouped


def image_path(name: str) -> Path:
    return SHARED / golden_case(name, "a_s1_flip")["image"]


def test_image_at_defaults_gives_the_reference_people_after_pose_nms(tmp_path):
    setting = "default"
    flags, case_name = SETTINGS[setting]
    names = []
    for name in IMAGES:
        shutil.copy(image_path(name), tmp_path / f"{name}.jpg")
        names.append(f"{name}.jpg")
    proc = run_console_script("image", *names, *MODEL, *flags, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    found = annotations_per_image(load_json(tmp_path / "images.pose.json"))
    dropped = 0
    for name in IMAGES:
        case = golden_case(name, case_name)
        expected = golden_people(case, pose_nms=True)
        dropped += len(case["people"]) - len(expected)
        assert_reference_people(found[f"{name}.jpg"], expected, f"aepose image, {name}, {setting}")
        assert (tmp_path / f"{name}.pose.jpg").is_file()
    assert dropped > 0, "pose NMS drops nobody in these cases: the default's selection is not what is compared"


@pytest.mark.parametrize("setting", SETTINGS)
def test_folder_without_pose_nms_gives_the_reference_people(tmp_path, setting):
    flags, case_name = SETTINGS[setting]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in IMAGES:
        shutil.copy(image_path(name), folder / f"{name}.jpg")
    proc = run_console_script("folder", "photos", *MODEL, *flags, "--no-pose-nms", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    found = annotations_per_image(load_json(tmp_path / "photos.pose.json"))
    assert sorted(found) == [f"{name}.jpg" for name in IMAGES]
    for name in IMAGES:
        expected = golden_people(golden_case(name, case_name), pose_nms=False)
        assert_reference_people(found[f"{name}.jpg"], expected, f"aepose folder --no-pose-nms, {name}, {setting}")
    assert sorted(p.name for p in (tmp_path / "photos.pose").iterdir()) == [f"{name}.jpg" for name in IMAGES]


def lossless_video(path: Path, image: np.ndarray, frames: int) -> None:
    """FFV1 in Matroska, packed 8-bit RGB (`bgr0`: no chroma subsampling, no loss): `frames`
    copies of `image`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "bgr0"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("setting", SETTINGS)
def test_video_of_a_golden_image_gives_the_reference_people_in_every_frame(tmp_path, setting):
    flags, case_name = SETTINGS[setting]
    image = cv2.imread(str(image_path(VIDEO_IMAGE)))  # the reference's decoding (read_image is the same)
    clip = tmp_path / "still.mkv"
    lossless_video(clip, image, VIDEO_FRAMES)
    with VideoSource(clip) as source:  # the decoder the command uses
        decoded = [frame.image_bgr for frame in source]
    assert len(decoded) == VIDEO_FRAMES and all(np.array_equal(frame, image) for frame in decoded)

    proc = run_console_script("video", clip.name, *MODEL, *flags, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    data = load_json(tmp_path / "still.pose.json")
    assert [im["frame_index"] for im in data["images"]] == list(range(VIDEO_FRAMES))
    case = golden_case(VIDEO_IMAGE, case_name)
    expected = golden_people(case, pose_nms=True)
    assert len(expected) < len(case["people"]), "pose NMS drops nobody here: the default's selection is not what is compared"
    found = annotations_per_image(data)
    for record in data["images"]:
        assert_reference_people(found[record["file_name"]], expected, f"aepose video, frame {record['frame_index']}, {setting}")
    with av.open(str(tmp_path / "still.pose.mp4")) as container:
        assert len(list(container.decode(video=0))) == VIDEO_FRAMES
