"""Output paths, atomic writes, streamed and resumable COCO JSON (pycocotools), JSON lines."""
from __future__ import annotations

import contextlib
import io
import json
import tracemalloc

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval

from aepose_cli.errors import ConfigError
from aepose_cli.io.atomic import atomic_output, atomic_write_bytes, atomic_write_text, write_image
from aepose_cli.io.coco_json import CocoJsonWriter, dataset_annotation, is_complete, journal_path
from aepose_cli.io.jsonlines import JsonLinesWriter
from aepose_cli.io.output_paths import resolve_output
from aepose_cli.io.sources import read_image
from aepose_cli.keypoints import COCO, MHP
from aepose_cli.types import FrameResult, Pose

from paths import SHARED, needs_shared  # noqa: E402

# -- resolve_output ---------------------------------------------------------------------------


def test_resolve_output_rule(tmp_path):
    video = tmp_path / "clip.mp4"
    photo = tmp_path / "photo.jpg"
    run = tmp_path / "run"
    run.mkdir()
    out_dir = tmp_path / "outs"
    out_dir.mkdir()

    # absent → next to the input
    assert resolve_output(None, video, ".mp4") == tmp_path / "clip.pose.mp4"
    assert resolve_output(None, photo, ".jpg") == tmp_path / "photo.pose.jpg"
    assert resolve_output(None, run, ".json") == tmp_path / "run.pose.json"
    assert resolve_output(True, video, ".json") == tmp_path / "clip.pose.json"
    assert resolve_output(None, "0", ".mp4", default_dir=out_dir) == out_dir / "0.pose.mp4"
    # an existing folder, or a name ending in '/' (created later by the writer)
    assert resolve_output(str(out_dir), video, ".mp4") == out_dir / "clip.pose.mp4"
    assert resolve_output(out_dir, photo, ".jpg") == out_dir / "photo.pose.jpg"
    new_dir = f"{tmp_path}/new/"
    assert resolve_output(new_dir, video, ".json") == tmp_path / "new" / "clip.pose.json"
    # a file path → that file
    assert resolve_output(str(tmp_path / "x" / "mine.json"), run, ".json") == (
        tmp_path / "x" / "mine.json"
    )
    # --no-... → off
    assert resolve_output(False, video, ".mp4") is None


def test_resolve_output_refuses_to_overwrite_the_input(tmp_path):
    photo = tmp_path / "photo.jpg"
    with pytest.raises(ConfigError, match="overwrite the input"):
        resolve_output(str(photo), photo, ".jpg")


# -- atomic writes ----------------------------------------------------------------------------


def test_atomic_writes_replace_in_one_step(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failed_write_leaves_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, "w") as handle:
            handle.write("half of the new con")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]

    fresh = tmp_path / "never.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(fresh) as handle:
            handle.write(b"x")
            raise KeyboardInterrupt
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    target = tmp_path / "perm.txt"
    atomic_write_text(target, "x")
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert target.stat().st_mode == reference.stat().st_mode


@needs_shared
def test_write_image_by_extension(tmp_path):
    image = read_image(SHARED / "data/ultralytics-assets/zidane.jpg")
    png = tmp_path / "out" / "z.pose.png"
    write_image(png, image)
    assert np.array_equal(read_image(png), image)
    jpg = tmp_path / "z.pose.jpg"
    write_image(jpg, image)
    ok, expected = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert jpg.read_bytes() == expected.tobytes()
    write_image(tmp_path / "small.jpg", image, jpeg_quality=30)
    assert (tmp_path / "small.jpg").stat().st_size < jpg.stat().st_size
    with pytest.raises(ConfigError, match="extension"):
        write_image(tmp_path / "z.pose.xyz", image)


# -- COCO JSON --------------------------------------------------------------------------------


def _frame(index: int, people: int, *, width=640, height=480, timestamp=None,
           with_tracks=False) -> FrameResult:
    rng = np.random.default_rng(index)
    poses = []
    for person in range(people):
        kpts = np.column_stack(
            [rng.uniform(0, width, 17), rng.uniform(0, height, 17), rng.uniform(0, 1, 17)]
        ).astype(np.float32)
        poses.append(Pose(kpts, float(np.float32(rng.uniform(0, 1))),
                          track_id=person if with_tracks else None))
    return FrameResult(index=index, image_size=(width, height), poses=poses,
                       source=f"img{index}.jpg", timestamp=timestamp)


def test_dataset_json_crash_resume_and_pycocotools(tmp_path):
    out = tmp_path / "run.pose.json"
    frames = [_frame(i, people=i % 3) for i in range(8)]  # 0, 1 or 2 people each

    writer = CocoJsonWriter(out, "dataset", COCO, kpt_thr=0.3)
    for frame in frames[:5]:
        writer.add(frame, file_name=f"sub/img{frame.index}.jpg")
    # Crash: the process dies without close(); add a torn half line as a kill mid-write would.
    writer._log._handle.flush()
    with open(journal_path(out), "a") as journal:
        journal.write('{"key": "sub/img5.jpg", "image": {"id"')
    del writer
    assert not out.exists() and not is_complete(out)

    resumed = CocoJsonWriter(out, "dataset", COCO, kpt_thr=0.3, resume=True)
    assert resumed.finished_sources() == {f"sub/img{i}.jpg" for i in range(5)}
    for frame in frames:
        key = f"sub/img{frame.index}.jpg"
        if key not in resumed.finished_sources():
            resumed.add(frame, file_name=key)
    assert resumed.close() == out
    assert is_complete(out) and not journal_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pose.json"]

    data = json.loads(out.read_text())
    assert [img["id"] for img in data["images"]] == [i + 1 for i in range(8)]
    assert [img["file_name"] for img in data["images"]] == [f"sub/img{i}.jpg" for i in range(8)]
    assert all("frame_index" not in img for img in data["images"])
    anns = data["annotations"]
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    assert len(anns) == sum(len(f.poses) for f in frames)

    # Every pose survives exactly (float32 → JSON → float32), with the documented fields.
    expected = [(f.index + 1, p) for f in frames for p in f.poses]
    for ann, (image_id, pose) in zip(anns, expected):
        assert ann["image_id"] == image_id and ann["category_id"] == 1 and ann["iscrowd"] == 0
        kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        assert np.array_equal(kpts[:, :2].astype(np.float32), pose.keypoints[:, :2])
        assert np.array_equal(np.asarray(ann["keypoint_scores"], np.float32), pose.keypoints[:, 2])
        visible = pose.keypoints[:, 2] >= 0.3
        assert np.array_equal(kpts[:, 2], np.where(visible, 2, 0))
        assert ann["num_keypoints"] == int(visible.sum())
        assert ann["score"] == pose.score
        assert ann["bbox"] == pytest.approx(list(pose.bbox))
        assert ann["area"] == pytest.approx(pose.bbox[2] * pose.bbox[3])

    category = data["categories"][0]
    assert category["keypoints"] == list(COCO.names)
    assert [16, 14] in category["skeleton"] and min(min(pair) for pair in category["skeleton"]) == 1

    with contextlib.redirect_stdout(io.StringIO()):
        api = CocoApi(str(out))
    assert sorted(api.getImgIds()) == list(range(1, 9))
    assert len(api.getAnnIds(imgIds=[5])) == len(frames[4].poses)


@needs_shared
def test_dataset_json_has_every_field_of_coco_person_keypoints(tmp_path):
    """What annotation tools (Datumaro/CVAT, Label Studio, FiftyOne) read: every field COCO's own
    person_keypoints_val2017.json has, with COCO's values where they are fixed (an empty
    `segmentation`, `iscrowd` 0, the 1-based skeleton, the keypoint names)."""
    coco = json.loads((SHARED / "data/coco-mini-val2017/annotations/person_keypoints_val2017.json").read_text())
    out = tmp_path / "run.pose.json"
    with CocoJsonWriter(out, "dataset", COCO, kpt_thr=0.3) as writer:
        for frame in (_frame(0, 2), _frame(1, 0), _frame(2, 1)):
            writer.add(frame, file_name=f"img{frame.index}.jpg")
    data = json.loads(out.read_text())

    assert set(coco) <= set(data), "top-level sections"
    assert set(coco["images"][0]) >= {"id", "file_name", "width", "height"}
    assert {"id", "file_name", "width", "height"} <= set(data["images"][0])
    assert len(data["annotations"]) == 3
    for ann in data["annotations"]:
        assert set(coco["annotations"][0]) <= set(ann), f"missing {set(coco['annotations'][0]) - set(ann)}"
        assert ann["segmentation"] == [] and ann["iscrowd"] == 0 and ann["category_id"] == 1
        assert len(ann["bbox"]) == 4 and ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
        flags = ann["keypoints"][2::3]
        assert set(flags) <= {0, 2} and ann["num_keypoints"] == flags.count(2)
    (ours,), (theirs,) = data["categories"], coco["categories"]
    assert set(theirs) <= set(ours)
    for field in ("id", "name", "supercategory", "keypoints", "skeleton"):
        assert ours[field] == theirs[field], field  # the skeleton 1-based, in COCO's order


def test_visibility_uses_the_drawing_threshold_rule():
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, 2] = 0.7  # float32(0.7) < 0.7
    kpts[0, 2] = 0.9
    ann = dataset_annotation(1, 1, Pose(kpts, 0.5), kpt_thr=0.7)
    assert ann["num_keypoints"] == 1
    assert ann["keypoints"][2::3] == [2] + [0] * 16


@needs_shared
def test_results_json_loads_with_loadres_and_evaluates(tmp_path):
    """Results style: feed the ground truth back as predictions and get AP 1.0."""
    gt_path = SHARED / "data/mmpose-testdata/coco/test_coco.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = CocoApi(str(gt_path))
    out = tmp_path / "results.json"
    with CocoJsonWriter(out, "results", COCO, kpt_thr=0.3) as writer:
        for index, image_id in enumerate(sorted(gt.getImgIds())):
            info = gt.loadImgs(image_id)[0]
            poses = []
            for ann in gt.loadAnns(gt.getAnnIds(imgIds=image_id, iscrowd=False)):
                if ann["num_keypoints"] == 0:
                    continue
                kpts = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
                kpts[:, 2] = (kpts[:, 2] > 0).astype(np.float32)
                poses.append(Pose(kpts, 1.0))
            frame = FrameResult(index, (info["width"], info["height"]), poses)
            writer.add(frame, file_name=info["file_name"], image_id=image_id)
    results = json.loads(out.read_text())
    assert isinstance(results, list) and results
    assert set(results[0]) == {"image_id", "category_id", "keypoints", "score", "bbox"}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(out))
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.params.useSegm = None
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_video_frames_tracks_and_other_keypoint_sets(tmp_path):
    out = tmp_path / "clip.pose.json"
    frames = [_frame(i, 2, timestamp=i / 29.97, with_tracks=True) for i in range(3)]
    for frame in frames:  # an MHP model: 16 joints
        frame.poses = [Pose(p.keypoints[:16], p.score, p.track_id) for p in frame.poses]
    with CocoJsonWriter(out, "dataset", MHP, kpt_thr=0.5) as writer:
        for f in frames:
            writer.add(f, file_name=f"clip.mp4#{f.index:06d}")
    data = json.loads(out.read_text())
    assert data["images"][1]["frame_index"] == 1
    assert data["images"][1]["timestamp"] == pytest.approx(1 / 29.97)
    assert [a["track_id"] for a in data["annotations"]] == [0, 1] * 3
    assert len(data["annotations"][0]["keypoints"]) == 48
    assert data["categories"][0]["keypoints"][0] == "right_ankle"
    with contextlib.redirect_stdout(io.StringIO()):
        CocoApi(str(out))


def test_resume_refuses_a_journal_of_another_keypoint_set(tmp_path):
    out = tmp_path / "run.json"
    writer = CocoJsonWriter(out, "dataset", COCO, 0.3)
    writer.add(_frame(0, 1), file_name="a.jpg")
    writer.abort()
    with pytest.raises(ConfigError, match="another kind"):
        CocoJsonWriter(out, "dataset", MHP, 0.3, resume=True)
    # Without resume, a stale journal is simply started over.
    fresh = CocoJsonWriter(out, "dataset", COCO, 0.3)
    assert fresh.finished_sources() == frozenset()
    fresh.close()
    assert json.loads(out.read_text())["images"] == []


def test_writer_rejects_duplicates_and_bad_style(tmp_path):
    writer = CocoJsonWriter(tmp_path / "x.json", "dataset", COCO, 0.3)
    writer.add(_frame(0, 1), file_name="a.jpg")
    with pytest.raises(ValueError, match="already written"):
        writer.add(_frame(1, 1), file_name="a.jpg")
    with pytest.raises(ValueError, match="image id 1"):
        writer.add(_frame(0, 1), file_name="b.jpg")
    with pytest.raises(ValueError, match="16 joints"):
        mhp_pose = Pose(np.zeros((16, 3), np.float32), 1.0)
        writer.add(FrameResult(5, (10, 10), [mhp_pose]), file_name="c.jpg")
    writer.close()
    with pytest.raises(ConfigError, match="json-style"):
        CocoJsonWriter(tmp_path / "y.json", "flat", COCO, 0.3)


def test_exception_inside_with_keeps_the_journal_for_resume(tmp_path):
    out = tmp_path / "run.json"
    with pytest.raises(KeyboardInterrupt):
        with CocoJsonWriter(out, "results", COCO, 0.3) as writer:
            writer.add(_frame(0, 2), file_name="a.jpg")
            raise KeyboardInterrupt
    assert not out.exists() and journal_path(out).exists()
    with CocoJsonWriter(out, "results", COCO, 0.3, resume=True) as writer:
        assert writer.finished_sources() == {"a.jpg"}
    assert len(json.loads(out.read_text())) == 2


def test_memory_stays_flat_for_long_runs(tmp_path):
    """Poses go straight to disk: memory grows by the keys and ids only, also when resuming."""
    out = tmp_path / "long.json"
    frame = _frame(0, 5)
    tracemalloc.start()
    try:
        writer = CocoJsonWriter(out, "dataset", COCO, 0.3, fsync_every=1000)
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(500):
            frame.index = i
            writer.add(frame, file_name=f"{i}.jpg")
        grown = tracemalloc.get_traced_memory()[0] - baseline
        writer.abort()
        resumed = CocoJsonWriter(out, "dataset", COCO, 0.3, resume=True)
        after_resume = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # 2,500 poses held as arrays would take about 950 kB; keys and ids take about 75 kB.
    assert grown < 300_000 and after_resume < 300_000
    assert len(resumed.finished_sources()) == 500
    resumed.close()
    data = json.loads(out.read_text())
    assert len(data["images"]) == 500 and len(data["annotations"]) == 2500


# -- JSON lines -------------------------------------------------------------------------------


def test_json_lines_writer(tmp_path):
    out = tmp_path / "clip.pose.jsonl"
    frames = [_frame(i, 1, timestamp=i * 0.04, with_tracks=True) for i in range(4)]
    frames[0].timings = {"network": np.float32(0.5)}
    with JsonLinesWriter(out) as writer:
        for frame in frames[:3]:
            writer.add(frame)
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["timings"] == {"network": 0.5}
    assert first["width"] == 640 and first["timestamp"] == 0.0
    assert np.array_equal(np.asarray(first["poses"][0]["keypoints"], np.float32),
                          frames[0].poses[0].keypoints)
    assert [json.loads(line)["poses"][0]["track_id"] for line in lines] == [f.poses[0].track_id for f in frames[:3]]
    # A new writer starts the file afresh (a JSON-lines output is not resumable).
    with JsonLinesWriter(out) as writer:
        writer.add(frames[3])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [3]


def test_json_lines_to_stdout(capsys):
    writer = JsonLinesWriter("-")
    writer.add(_frame(0, 1))
    writer.close()
    record = json.loads(capsys.readouterr().out)
    assert record["source"] == "img0.jpg" and len(record["poses"]) == 1
