"""`aepose image` end to end on real photos: its files, its JSON, its poses.

The poses the command writes must be exactly those of the library (`PoseEstimator.predict`)
under the same options: the CLI may only add files around them, never change them. The
two-photo run with default outputs is a real subprocess; the other cases run the command in
this process (`run_in_process`), which sees the same exit code, output and files.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from aepose_cli.estimator import PoseEstimator
from aepose_cli.keypoints import COCO as COCO_KEYPOINTS

from cli_helpers import (
    COCO_IMAGES,
    FAST,
    MINI_VAL_ANN,
    TINY_CHECKPOINT,
    ZIDANE,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    describe,
    keypoint_array,
    load_json,
    poses_by_image,
    run_cli,
    run_in_process,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

SMALL_PHOTO = COCO_IMAGES / "000000040083.jpg"  # 500x333, people
KPT_THR = 0.1


def _copy_inputs(folder: Path, *sources: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        shutil.copy(source, folder / source.name)
    return [source.name for source in sources]


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """One run over two photos with every output at its default place.

    The random weights score few joints above the default 0.3, so drawing starts at 0.1."""
    folder = tmp_path_factory.mktemp("two_images")
    names = _copy_inputs(folder, ZIDANE, SMALL_PHOTO)
    proc = run_cli("image", *names, *FAST, "--kpt-thr", KPT_THR, cwd=folder)
    return folder, names, proc


def test_default_outputs_next_to_the_inputs(two_images):
    folder, names, proc = two_images
    assert_ok(proc)
    for name in names:
        annotated = folder / name.replace(".jpg", ".pose.jpg")
        assert annotated.is_file(), sorted(p.name for p in folder.iterdir())
        drawn, original = cv2.imread(str(annotated)), cv2.imread(str(folder / name))
        assert drawn.shape == original.shape
        # Something was drawn: far more than JPEG re-encoding noise differs.
        assert np.count_nonzero(np.abs(drawn.astype(int) - original.astype(int)).max(axis=2) > 60) > 50
    # Several inputs share one JSON, named after the first input's folder.
    assert (folder / "images.pose.json").is_file()
    assert "wrote" in proc.stderr and "2 image(s) done, 0 failed" in proc.stderr


def test_dataset_json_loads_with_pycocotools(two_images):
    folder, names, proc = two_images
    assert_ok(proc)
    coco = COCO(str(folder / "images.pose.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert [im["file_name"] for im in images] == names  # relative to the JSON, input order
    for im, name in zip(images, names):
        height, width = cv2.imread(str(folder / name)).shape[:2]
        assert (im["width"], im["height"]) == (width, height)
    (category,) = coco.loadCats(coco.getCatIds())
    assert category["name"] == "person"
    assert category["keypoints"] == list(COCO_KEYPOINTS.names)
    # The skeleton is the official COCO one (1-based pairs), as in the real annotation file.
    official = load_json(MINI_VAL_ANN)["categories"][0]
    assert category["keypoints"] == official["keypoints"]
    assert {tuple(sorted(p)) for p in category["skeleton"]} == {tuple(sorted(p)) for p in official["skeleton"]}
    annotations = coco.loadAnns(coco.getAnnIds())
    assert annotations, "random weights still give people on these photos"
    for ann in annotations:
        kpts = np.asarray(ann["keypoints"]).reshape(-1, 3)
        assert kpts.shape == (17, 3) and set(kpts[:, 2]) <= {0, 2}
        np.testing.assert_array_equal(kpts[:, 2] == 2, np.asarray(ann["keypoint_scores"]) >= KPT_THR)
        assert ann["num_keypoints"] == int((kpts[:, 2] == 2).sum())


@pytest.fixture(scope="module")
def library() -> PoseEstimator:
    """The library under the options of `FAST`."""
    return PoseEstimator(checkpoint=TINY_CHECKPOINT, flip=False, scales=(0.25,))


def test_poses_equal_the_library(two_images, library):
    """Both photos have the same network input size at this scale, so the command runs them
    in one batch, exactly as `predict_batch` does (a batch rounds differently, by ~1e-6, from
    single images)."""
    folder, names, proc = two_images
    assert_ok(proc)
    written = poses_by_image(load_json(folder / "images.pose.json"))
    expected = library.predict_batch([folder / name for name in names])
    for image_id, (name, result) in enumerate(zip(names, expected), start=1):
        assert written[image_id], f"{name}: random weights still give people"
        assert_same_poses(written[image_id], [p.keypoints for p in result.poses], name)


def test_out_folder_and_results_style(two_images, library, tmp_path):
    """`--out DIR/` puts the drawing there; `--json-style results` is what `loadRes` takes,
    and a single image gives exactly `predict`."""
    _, _, first = two_images
    assert_ok(first)
    _copy_inputs(tmp_path, ZIDANE)
    proc = run_in_process("image", "zidane.jpg", "--out", "drawn/", "--json-style", "results", "--json", "res.json", *FAST, cwd=tmp_path)
    assert_ok(proc)
    assert (tmp_path / "drawn" / "zidane.pose.jpg").is_file()
    assert not (tmp_path / "zidane.pose.jpg").exists()
    results = load_json(tmp_path / "res.json")
    assert isinstance(results, list) and results
    assert {r["image_id"] for r in results} == {1}
    # zidane.jpg is image 1 of the two-image dataset JSON as well.
    gt = COCO(str(two_images[0] / "images.pose.json"))
    loaded = gt.loadRes(str(tmp_path / "res.json"))
    assert len(loaded.getAnnIds()) == len(results)
    expected = library.predict(tmp_path / "zidane.jpg")
    assert_same_poses([keypoint_array(r) for r in results], [p.keypoints for p in expected], "results style")
    assert [r["score"] for r in results] == [p.score for p in expected]


def test_out_file_and_no_json(tmp_path):
    _copy_inputs(tmp_path, SMALL_PHOTO)
    proc = run_in_process("image", SMALL_PHOTO.name, "--out", "annotated.png", "--no-json", *FAST, cwd=tmp_path)
    assert_ok(proc)
    drawn = cv2.imread(str(tmp_path / "annotated.png"))
    assert drawn is not None and drawn.shape == cv2.imread(str(SMALL_PHOTO)).shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000040083.jpg", "annotated.png"]


def test_no_images_writes_only_json(tmp_path):
    _copy_inputs(tmp_path, SMALL_PHOTO)
    proc = run_in_process("image", SMALL_PHOTO.name, "--no-images", "--json", "out/", *FAST, cwd=tmp_path)
    assert_ok(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000040083.jpg", "out"]
    data = load_json(tmp_path / "out" / "000000040083.pose.json")
    assert [im["file_name"] for im in data["images"]] == ["../000000040083.jpg"]


def test_out_file_with_several_images_is_refused(tmp_path):
    names = _copy_inputs(tmp_path, ZIDANE, SMALL_PHOTO)
    proc = run_in_process("image", *names, "--out", "one.jpg", *FAST, cwd=tmp_path)
    assert_one_line_error(proc, "--out one.jpg", "folder", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_out_folder_holds_the_json_too_and_the_device_is_chosen_automatically(tmp_path):
    """`--out DIR/` without `--json`: drawing and JSON both go into DIR, nothing beside the
    input; the default `--device auto` picks CUDA when there is one, and the summary says which."""
    import torch

    _copy_inputs(tmp_path, SMALL_PHOTO)
    proc = run_in_process("image", SMALL_PHOTO.name, "--out", "drawn/", "--checkpoint", TINY_CHECKPOINT, "--no-flip", "--scales", "0.25", cwd=tmp_path)
    assert_ok(proc)
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["000000040083.pose.jpg", "000000040083.pose.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000040083.jpg", "drawn"]
    data = load_json(tmp_path / "drawn" / "000000040083.pose.json")
    assert [im["file_name"] for im in data["images"]] == ["../000000040083.jpg"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert "1 image(s) done, 0 failed" in proc.stderr and f"s on {device}" in proc.stderr, describe(proc)
