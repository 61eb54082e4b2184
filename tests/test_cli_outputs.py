"""Outputs that other tools take as they are (issue 24), end to end: image ids that COCO's own
annotations know (`--image-ids`), scored by pycocotools; the `--csv` table, row for row the
JSON's keypoints, for images, folders and videos, and the same after an interrupted run resumes.

The commands run in this process (`run_in_process`) on real COCO val2017 photos and a real clip
with the tiny checkpoint at FAST settings; the refusals are checked before any model loads.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from aepose_cli.evaluation.cocoeval import METRIC_NAMES, evaluate_keypoints
from aepose_cli.io.keypoint_csv import CSV_COLUMNS
from aepose_cli.keypoints import COCO

from cli_helpers import (
    COCO_IMAGES,
    DATA,
    FAST,
    MINI_VAL,
    MINI_VAL_ANN,
    assert_exit_code,
    assert_ok,
    assert_one_line_error,
    describe,
    load_json,
    run_in_process,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

MMPOSE_COCO_ANN = COCO_IMAGES / "test_coco.json"
NTSC_CLIP = DATA / "mmaction2-videos" / "test_video_structuralize.mp4"  # 426x240, 30000/1001 fps


# ---------------------------------------------------------------------------------------------
# --image-ids


@pytest.fixture(scope="module")
def mini_val_results(tmp_path_factory):
    """`aepose folder` on the 79 COCO-MINI val2017 photos, results style, ids from the stems."""
    out = tmp_path_factory.mktemp("ids") / "mini.results.json"
    proc = run_in_process(
        "folder", MINI_VAL / "val2017", *FAST, "--no-images", "--json-style", "results", "--image-ids", "stem", "--json", out,
    )
    assert_ok(proc)
    return load_json(out)


def test_stem_ids_are_the_official_ids(mini_val_results):
    annotations = load_json(MINI_VAL_ANN)
    official = {image["file_name"]: image["id"] for image in annotations["images"]}
    assert all(int(name.split(".")[0]) == image_id for name, image_id in official.items())
    ids = {r["image_id"] for r in mini_val_results}
    assert len(ids) > 40, "the run should find people (or noise) in most images"
    assert ids <= set(official.values())


def _truth_moved(annotations: dict, image_ids: set[int], seed: int = 0) -> list[dict]:
    """Results made from the annotated people of the images the run numbered, each joint moved
    by a few pixels and each person given a random score (and a box, as ours have): the tiny checkpoint is untrained (its
    own results score 0 everywhere), and with these the ten numbers are not all zeros."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in annotations["annotations"]:
        if ann["image_id"] not in image_ids or ann["iscrowd"] or ann["num_keypoints"] == 0:
            continue
        joints = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        joints[:, :2] += rng.normal(0.0, 6.0, size=(len(joints), 2))
        joints[:, 2] = 1.0
        (x0, y0), (x1, y1) = joints[:, :2].min(axis=0), joints[:, :2].max(axis=0)
        results.append({
            "image_id": ann["image_id"], "category_id": 1, "keypoints": joints.ravel().round(2).tolist(),
            "score": float(rng.uniform(0.1, 1.0)), "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        })
    return results


def test_stem_ids_score_in_pycocotools_as_in_our_evaluator(mini_val_results):
    """pycocotools takes the file as it is (`loadRes` refuses ids that are not the annotations'
    own) and its ten numbers are our evaluator's: on the run's results (all 0, the checkpoint is
    untrained) and on them with moved copies of the truth of the same images added."""
    annotations = load_json(MINI_VAL_ANN)
    with_truth = mini_val_results + _truth_moved(annotations, {r["image_id"] for r in mini_val_results})
    for results in (mini_val_results, with_truth):
        with contextlib.redirect_stdout(io.StringIO()):
            truth = CocoApi(str(MINI_VAL_ANN))
            detections = truth.loadRes(results)
            evaluator = COCOeval(truth, detections, "keypoints")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        ours = evaluate_keypoints(MINI_VAL_ANN, results, COCO.sigmas, COCO.use_area)
        assert list(ours) == list(METRIC_NAMES)
        np.testing.assert_allclose(evaluator.stats, [ours[name] for name in METRIC_NAMES], rtol=0, atol=1e-12)
    assert 0.2 < ours["AP"] < 0.99, ours  # the moved truth scores, and not perfectly
    # The ids sequential numbering gives (1..79) are not the split's: pycocotools refuses them.
    renumbered = [dict(r, image_id=i + 1) for i, r in enumerate(mini_val_results)]
    with pytest.raises(AssertionError, match="do not correspond"), contextlib.redirect_stdout(io.StringIO()):
        truth.loadRes(renumbered)


def test_ids_from_an_annotation_file_and_in_provenance(tmp_path):
    """`from:ANN.json` gives each image the id its file_name has there (here ids that are neither
    the stems nor the listing's order); the folder's JSON records the choice, and
    `--skip-existing` with other ids refuses the finished file."""
    folder = tmp_path / "photos"
    shutil.copytree(COCO_IMAGES, folder, ignore=shutil.ignore_patterns("*.json"))
    annotations = load_json(MMPOSE_COCO_ANN)
    renumber = {image["id"]: 900 - 100 * i for i, image in enumerate(annotations["images"])}  # 900, 800, ...
    for image in annotations["images"]:
        image["id"] = renumber[image["id"]]
    for ann in annotations["annotations"]:
        ann["image_id"] = renumber[ann["image_id"]]
    ann_path = tmp_path / "renumbered.json"
    ann_path.write_text(json.dumps(annotations))
    out = tmp_path / "poses.json"
    proc = run_in_process("folder", folder, *FAST, "--no-images", "--image-ids", f"from:{ann_path}", "--json", out)
    assert_ok(proc)
    data = load_json(out)
    expected = {image["file_name"]: image["id"] for image in annotations["images"]}
    assert {image["file_name"]: image["id"] for image in data["images"]} == expected
    assert sorted(expected.values()) == [600, 700, 800, 900]
    assert {ann["image_id"] for ann in data["annotations"]} <= set(expected.values())
    assert data["info"]["aepose"]["image_ids"].startswith(f"from:{ann_path.resolve()} sha256:")

    proc = run_in_process("folder", folder, *FAST, "--no-images", "--image-ids", "stem", "--json", out, "--skip-existing")
    assert_one_line_error(proc, str(out), "image_ids", code=2)
    proc = run_in_process("folder", folder, *FAST, "--no-images", "--image-ids", f"from:{ann_path}", "--json", out, "--skip-existing")
    assert_ok(proc)
    assert "nothing to do" in proc.stderr, describe(proc)


def test_image_command_numbers_by_stem(tmp_path):
    photos = sorted(COCO_IMAGES.glob("*.jpg"))[:2]
    out = tmp_path / "two.json"
    proc = run_in_process("image", *photos, *FAST, "--no-images", "--json", out, "--json-style", "results", "--image-ids", "stem")
    assert_ok(proc)
    assert {r["image_id"] for r in load_json(out)} <= {int(p.stem) for p in photos}


def test_bad_image_ids_are_refused_before_the_model_loads(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(COCO_IMAGES / "000000000785.jpg", folder / "000000000785.jpg")
    shutil.copy(COCO_IMAGES / "000000040083.jpg", folder / "holiday.jpg")
    missing_model = ["--checkpoint", tmp_path / "no-such.pth", "--device", "cpu"]  # never loaded: refused first

    proc = run_in_process("folder", folder, *missing_model, "--image-ids", "stem")
    assert_one_line_error(proc, "holiday.jpg", "not 'holiday'", "--image-ids stem", code=2)

    (folder / "holiday.jpg").rename(folder / "785.jpg")
    proc = run_in_process("folder", folder, *missing_model, "--image-ids", "stem")
    assert_one_line_error(proc, "785.jpg", "000000000785.jpg", "image id 785", code=2)

    proc = run_in_process("folder", folder, *missing_model, "--image-ids", f"from:{MINI_VAL_ANN}")
    assert_one_line_error(proc, "not among the images of", str(MINI_VAL_ANN), code=2)

    for value in ("bogus", "from:"):
        proc = run_in_process("folder", folder, *missing_model, "--image-ids", value)
        assert_one_line_error(proc, "--image-ids", code=2)

    # The annotation file is an input: no output may replace it.
    (folder / "785.jpg").unlink()
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(load_json(MMPOSE_COCO_ANN)))
    before = ann.read_bytes()
    proc = run_in_process("folder", folder, *missing_model, "--image-ids", f"from:{ann}", "--json", ann)
    assert_one_line_error(proc, "would overwrite the input", code=2)
    assert ann.read_bytes() == before
    assert not (tmp_path / "photos.pose").exists()


# ---------------------------------------------------------------------------------------------
# --csv


def stopped_after(write, items: int, then=None):
    """A sink's `write` that writes `items` items, then stops the run as Ctrl-C does; `then`, if
    given, first writes the next item its own way (half of it, say)."""
    written = [0]

    def write_then_stop(self, item, image, result):
        if written[0] == items:
            if then is not None:
                then(self, item, image, result)
            raise KeyboardInterrupt
        written[0] += 1
        write(self, item, image, result)

    return write_then_stop


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def assert_rows_are_the_json(rows: list[dict[str, str]], data: dict, source_of=lambda image: image["file_name"]) -> None:
    """Every row of the table is one keypoint of one person of the dataset-style JSON, in the
    JSON's order, every value equal (numbers read back to the very floats the JSON holds)."""
    people: dict[int, list[dict]] = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        people[ann["image_id"]].append(ann)
    names = data["categories"][0]["keypoints"]
    expected = []
    for image in data["images"]:
        for person, ann in enumerate(people[image["id"]]):
            for joint, name in enumerate(names):
                expected.append({
                    "source": source_of(image), "image_id": image["id"], "frame": image.get("frame_index", 0),
                    "time_s": image.get("timestamp"), "track_id": ann.get("track_id"), "person": person,
                    "person_score": ann["score"], "keypoint": name, "x": ann["keypoints"][3 * joint],
                    "y": ann["keypoints"][3 * joint + 1], "score": ann["keypoint_scores"][joint],
                })
    assert expected, "the run should find people to compare"
    assert len(rows) == len(expected)
    for number, (row, want) in enumerate(zip(rows, expected), start=2):
        got = {
            "source": row["source"], "image_id": int(row["image_id"]), "frame": int(row["frame"]),
            "time_s": float(row["time_s"]) if row["time_s"] else None, "track_id": int(row["track_id"]) if row["track_id"] else None,
            "person": int(row["person"]), "person_score": float(row["person_score"]), "keypoint": row["keypoint"],
            "x": float(row["x"]), "y": float(row["y"]), "score": float(row["score"]),
        }
        assert got == want, f"CSV line {number}"


def test_image_csv_rows_are_the_json(tmp_path):
    photos = sorted(COCO_IMAGES.glob("*.jpg"))[:2]
    proc = run_in_process("image", *photos, *FAST, "--no-images", "--json", tmp_path / "poses.json", "--csv", tmp_path / "poses.csv")
    assert_ok(proc)
    assert f"wrote {tmp_path / 'poses.csv'}" in proc.stderr
    assert_rows_are_the_json(csv_rows(tmp_path / "poses.csv"), load_json(tmp_path / "poses.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.csv", "poses.json"]  # no journal, lock or temporary left


def test_folder_csv_resumes_after_an_interruption_to_the_same_table(tmp_path, monkeypatch):
    """Stopped (Ctrl-C) while the third image was written: in the JSON's journal but not yet in
    the CSV's. `--skip-existing` does that image again for the CSV alone, and both files come out
    as an uninterrupted run's."""
    from aepose_cli.jobs import images as images_job

    folder = tmp_path / "photos"
    shutil.copytree(COCO_IMAGES, folder, ignore=shutil.ignore_patterns("*.json"))
    for source in sorted(COCO_IMAGES.glob("*.jpg"))[:2]:
        shutil.copy(source, folder / f"again_{source.name}")
    run = [*FAST, "--batch-size", "1", "--no-images"]
    proc = run_in_process("folder", folder, *run, "--json", tmp_path / "reference.json", "--csv", tmp_path / "reference.csv")
    assert_ok(proc)
    reference = csv_rows(tmp_path / "reference.csv")
    assert_rows_are_the_json(reference, load_json(tmp_path / "reference.json"))

    write = images_job._ImageSink.write

    def json_only(self, item, image, result):  # the JSON's journal gets it, the CSV's does not
        table, self.table = self.table, None
        write(self, item, image, result)
        self.table = table

    outputs = ["--json", tmp_path / "resumed.json", "--csv", tmp_path / "resumed.csv"]
    with monkeypatch.context() as patch:
        patch.setattr(images_job._ImageSink, "write", stopped_after(write, 2, then=json_only))
        proc = run_in_process("folder", folder, *run, *outputs)
    assert_exit_code(proc, 130)
    assert "the 3 image(s) done are kept in resumed.json.partial.jsonl" in proc.stderr, describe(proc)
    assert "the 2 image(s) done are kept in resumed.csv.partial.jsonl" in proc.stderr, describe(proc)
    assert not (tmp_path / "resumed.csv").exists()

    proc = run_in_process("folder", folder, *run, *outputs, "--skip-existing")
    assert_ok(proc)
    assert "resuming: 2 of 6 images already done" in proc.stderr, describe(proc)
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()
    resumed = load_json(tmp_path / "resumed.json")
    assert resumed["annotations"] == load_json(tmp_path / "reference.json")["annotations"]
    assert not list(tmp_path.glob("*.partial.jsonl"))

    # Finished: nothing to do. A finished CSV alone records nothing of what made it: refused.
    proc = run_in_process("folder", folder, *run, *outputs, "--skip-existing")
    assert_ok(proc)
    assert "nothing to do" in proc.stderr
    proc = run_in_process("folder", folder, *run, "--no-json", "--csv", tmp_path / "resumed.csv", "--skip-existing")
    assert_one_line_error(proc, "resumed.csv", "records nothing of what produced it", code=2)
    # The finished JSON alone builds the missing table without running anything.
    (tmp_path / "resumed.csv").unlink()
    proc = run_in_process("folder", folder, *run, *outputs, "--skip-existing")
    assert_ok(proc)
    assert "0 image(s) done" in proc.stderr, describe(proc)
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()


def test_video_csv_with_tracks_is_the_json(tmp_path):
    clip = tmp_path / "court.mp4"
    shutil.copy(NTSC_CLIP, clip)
    proc = run_in_process("video", clip, *FAST, "--end", "0.2", "--track", "--no-video", "--csv", tmp_path / "court.csv")
    assert_ok(proc)
    data = load_json(tmp_path / "court.pose.json")
    rows = csv_rows(tmp_path / "court.csv")
    assert_rows_are_the_json(rows, data, source_of=lambda image: str(clip))
    assert {row["frame"] for row in rows} == {str(i) for i in range(6)}
    assert all(row["track_id"] for row in rows)
    assert float(rows[-1]["time_s"]) == pytest.approx(5 * 1001 / 30000)


def test_video_csv_resumes_exactly_after_an_interruption(tmp_path, monkeypatch):
    from aepose_cli.jobs import video as video_job

    clip = tmp_path / "court.mp4"
    shutil.copy(NTSC_CLIP, clip)
    run = ["video", clip, *FAST, "--end", "0.2", "--no-video", "--batch-size", "2"]  # six frames, batches of two
    assert_ok(run_in_process(*run, "--json", tmp_path / "reference.json", "--csv", tmp_path / "reference.csv"))
    outputs = ["--json", tmp_path / "resumed.json", "--csv", tmp_path / "resumed.csv"]
    with monkeypatch.context() as patch:
        patch.setattr(video_job._FrameSink, "write", stopped_after(video_job._FrameSink.write, 3))
        proc = run_in_process(*run, *outputs)
    assert_exit_code(proc, 130)
    assert "the 3 frame(s) done are kept in resumed.csv.partial.jsonl" in proc.stderr, describe(proc)
    proc = run_in_process(*run, *outputs, "--skip-existing")
    assert_ok(proc)
    assert "resumed: 2 frame(s) were done by the stopped run" in proc.stderr, describe(proc)
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()
    assert_rows_are_the_json(csv_rows(tmp_path / "resumed.csv"), load_json(tmp_path / "resumed.json"), source_of=lambda image: str(clip))


def test_csv_output_clashes_are_refused_before_the_model_loads(tmp_path):
    photo = tmp_path / "a.jpg"
    shutil.copy(COCO_IMAGES / "000000000785.jpg", photo)
    missing_model = ["--checkpoint", tmp_path / "no-such.pth", "--device", "cpu"]
    proc = run_in_process("image", photo, *missing_model, "--csv", photo)
    assert_one_line_error(proc, "a.jpg", "would overwrite the input", code=2)
    proc = run_in_process("image", photo, *missing_model, "--json", tmp_path / "x.json", "--csv", tmp_path / "x.json")
    assert_one_line_error(proc, "--json and --csv would both write this file", code=2)
    proc = run_in_process("folder", tmp_path, *missing_model, "--csv", tmp_path / "table.jpg")
    assert_one_line_error(proc, "--csv", "would land among the input images", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]
