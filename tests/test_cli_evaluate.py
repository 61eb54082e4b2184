"""`aepose evaluate` end to end: the reference's numbers from the golden results file, a real
inference run on COCO val2017 photos, and the annotation/result problems a user meets.

The golden-results run is a real subprocess; the other cases run the command in this process
(`run_in_process`), which sees the same exit code, output and files.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from aepose_cli.estimator import PoseEstimator

from cli_helpers import (
    FAST,
    GOLDEN,
    MINI_VAL,
    MINI_VAL_ANN,
    TINY_CHECKPOINT,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    describe,
    keypoint_array,
    load_json,
    run_cli,
    run_in_process,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

GOLDEN_RESULTS = GOLDEN / "grouping" / "results.json"
GOLDEN_METRICS = GOLDEN / "grouping" / "metrics.json"
METRIC_NAMES = ["AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)"]


def _printed_metrics(stdout: str) -> dict[str, str]:
    """Metric -> value cell of the table the command prints."""
    printed = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 2 and cells[0] in METRIC_NAMES:
            printed[cells[0]] = cells[1]
    return printed


def _expected_cells(metrics: dict) -> dict[str, str]:
    return {name: "n/a" if metrics[name] == -1 else f"{metrics[name]:.3f}" for name in METRIC_NAMES}


def test_golden_results_give_the_reference_metrics(tmp_path):
    metrics_path = tmp_path / "metrics.json"
    proc = run_cli("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--metrics-json", metrics_path)
    assert_ok(proc)
    expected = load_json(GOLDEN_METRICS)
    assert load_json(metrics_path) == expected  # exact floats
    assert _printed_metrics(proc.stdout) == _expected_cells(expected), describe(proc)


# ---------------------------------------------------------------------------------------------
# inference


@pytest.fixture(scope="module")
def inference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    proc = run_in_process(
        "evaluate", "--ann", MINI_VAL_ANN, "--images", MINI_VAL / "val2017", "--max-images", 3, *FAST,
        "--out", out / "results.json", "--metrics-json", out / "metrics.json",
    )
    return out, proc


def _first_images(count: int) -> list[dict]:
    return load_json(MINI_VAL_ANN)["images"][:count]


def test_inference_writes_results_and_metrics(inference_run):
    out, proc = inference_run
    assert_ok(proc)
    results = load_json(out / "results.json")
    assert isinstance(results, list) and results, describe(proc)
    first_three = {im["id"] for im in _first_images(3)}
    assert {r["image_id"] for r in results} <= first_three
    metrics = load_json(out / "metrics.json")
    assert list(metrics) == METRIC_NAMES
    assert all(v == -1 or 0 <= v <= 1 for v in metrics.values())
    assert _printed_metrics(proc.stdout) == _expected_cells(metrics), describe(proc)


def test_inference_results_score_the_same_when_given_back(inference_run, tmp_path):
    out, proc = inference_run
    assert_ok(proc)
    again = tmp_path / "again.json"
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", out / "results.json", "--max-images", 3, "--metrics-json", again)
    assert_ok(proc)
    assert load_json(again) == load_json(out / "metrics.json")


def test_inference_poses_are_the_library_without_pose_nms(inference_run):
    """The evaluation path of the reference has no pose NMS; neither has `evaluate`. The command
    batches equal-sized photos together exactly as `predict_batch` does."""
    out, proc = inference_run
    assert_ok(proc)
    results = load_json(out / "results.json")
    images = _first_images(3)
    estimator = PoseEstimator(checkpoint=TINY_CHECKPOINT, flip=False, scales=(0.25,), pose_nms=None)
    expected = estimator.predict_batch([MINI_VAL / "val2017" / im["file_name"] for im in images])
    for image, result in zip(images, expected):
        written = [keypoint_array(r) for r in results if r["image_id"] == image["id"]]
        assert_same_poses(written, [p.keypoints for p in result.poses], image["file_name"])
        assert [r["score"] for r in results if r["image_id"] == image["id"]] == [p.score for p in result.poses]


# ---------------------------------------------------------------------------------------------
# errors


def test_annotations_without_keypoints(tmp_path):
    ann = load_json(MINI_VAL_ANN)
    for category in ann["categories"]:
        category.pop("keypoints", None)
        category.pop("skeleton", None)
    for annotation in ann["annotations"]:
        annotation.pop("keypoints", None)
        annotation.pop("num_keypoints", None)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(ann))
    proc = run_in_process("evaluate", "--ann", path, "--pred", GOLDEN_RESULTS)
    assert_one_line_error(proc, str(path), "keypoints", code=2)


def test_results_for_images_not_in_the_annotations(tmp_path):
    results = load_json(GOLDEN_RESULTS)
    foreign = copy.deepcopy(results[0])
    foreign["image_id"] = 987654321
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results + [foreign]))
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", path)
    assert_one_line_error(proc, str(path), "987654321", code=2)


def test_keypoint_set_that_does_not_fit_the_annotations():
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--keypoints", "aic")
    assert_one_line_error(proc, "aic", "14", "17", code=2)


@pytest.fixture()
def partial_images(tmp_path) -> tuple[Path, str, str]:
    """An image folder holding the first annotated image but not the second."""
    present, missing = (im["file_name"] for im in _first_images(2))
    folder = tmp_path / "val2017"
    folder.mkdir()
    shutil.copy(MINI_VAL / "val2017" / present, folder / present)
    return folder, present, missing


def test_missing_images_are_fatal_and_listed(partial_images, tmp_path):
    folder, present, missing = partial_images
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--images", folder, "--max-images", 2, *FAST, "--out", tmp_path / "r.json")
    assert_one_line_error(proc, "1 annotated image(s) missing", missing, "--allow-missing", code=2)
    assert present not in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_allow_missing_warns_and_continues(partial_images, tmp_path):
    folder, present, missing = partial_images
    results_path = tmp_path / "r.json"
    proc = run_in_process(
        "evaluate", "--ann", MINI_VAL_ANN, "--images", folder, "--max-images", 2, *FAST,
        "--allow-missing", "--out", results_path,
    )
    assert_ok(proc)
    warning = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and missing in warning[0], describe(proc)
    present_id, missing_id = (im["id"] for im in _first_images(2))
    ids = {r["image_id"] for r in load_json(results_path)}
    assert ids == {present_id}, describe(proc)
    assert "AP" in _printed_metrics(proc.stdout)


def test_allow_missing_leaves_skipped_images_out_of_the_score(partial_images, tmp_path):
    """Only the missing image has a medium-size person: counted as a miss, AP (M) would be 0;
    left out, there is no medium GT at all and AP (M) is -1."""
    folder, _, _ = partial_images
    present_id, missing_id = (im["id"] for im in _first_images(2))
    ann = json.loads(Path(MINI_VAL_ANN).read_text())
    ann["images"] = [im for im in ann["images"] if im["id"] in (present_id, missing_id)]
    kept = []
    for a in ann["annotations"]:
        if a["image_id"] == missing_id and a["num_keypoints"] > 0:
            kept.append(dict(a, area=40.0**2))  # medium
        elif a["image_id"] == present_id and a["area"] > 96.0**2:
            kept.append(a)  # large only
    ann["annotations"] = kept
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    metrics_path = tmp_path / "m.json"
    proc = run_in_process(
        "evaluate", "--ann", ann_path, "--images", folder, *FAST, "--allow-missing",
        "--out", tmp_path / "r.json", "--metrics-json", metrics_path,
    )
    assert_ok(proc)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["AP (M)"] == -1.0 and metrics["AR (M)"] == -1.0, metrics
    proc = run_in_process("evaluate", "--ann", ann_path, "--pred", tmp_path / "r.json", "--metrics-json", metrics_path)
    assert_ok(proc)
    assert json.loads(metrics_path.read_text())["AP (M)"] == 0.0  # the whole file counts the miss
