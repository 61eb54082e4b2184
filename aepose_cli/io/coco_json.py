"""Streaming COCO JSON: dataset files for annotation tools, or results lists for evaluation.

Long runs stream their COCO JSON through an append-only journal (`NAME.partial.jsonl`, one line
per finished image) so that memory stays flat and a crashed or interrupted run resumes where it
stopped; the final JSON is assembled from the journal, atomically, at `close()`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError
from ..keypoints import KeypointSet
from ..types import FrameResult, Pose
from .atomic import atomic_output
from .jsonlines import LineLog, dumps, iter_records, open_resumable, track_fields

JSON_STYLES: tuple[str, ...] = ("dataset", "results")
PERSON_CATEGORY_ID = 1
JOURNAL_SUFFIX = ".partial.jsonl"
_JOURNAL_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# COCO records


def coco_categories(keypoints: KeypointSet) -> list[dict[str, Any]]:
    """The single person category with keypoint names and the skeleton as 1-based pairs (COCO)."""
    return [
        {
            "id": PERSON_CATEGORY_ID,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(keypoints.names),
            "skeleton": [[a + 1, b + 1] for a, b in keypoints.skeleton],
        }
    ]


def image_record(image_id: int, frame: FrameResult, file_name: str) -> dict[str, Any]:
    """COCO `images` entry; video frames (frames with a timestamp) add frame_index and timestamp."""
    width, height = frame.image_size
    record: dict[str, Any] = {
        "id": int(image_id),
        "file_name": file_name,
        "width": int(width),
        "height": int(height),
    }
    if frame.timestamp is not None:
        record["frame_index"] = int(frame.index)
        record["timestamp"] = float(frame.timestamp)
    return record


def flat_keypoints(pose: Pose) -> list[float]:
    """[x1, y1, s1, ..., xK, yK, sK] as Python floats (float32 values kept exactly)."""
    return np.asarray(pose.keypoints)[:, :3].ravel().tolist()


def dataset_annotation(
    annotation_id: int, image_id: int, pose: Pose, kpt_thr: float
) -> dict[str, Any]:
    """COCO `annotations` entry for annotation tools and `COCO()`.

    `keypoints` carries COCO visibility flags: 2 where the score is at least `kpt_thr`, 0 below
    (coordinates are kept either way); the raw scores travel in `keypoint_scores`.
    `num_keypoints` counts the joints at or above `kpt_thr`. `bbox` and `area` span all K
    keypoints, as in the reference's result file and pycocotools' `loadRes`.
    """
    kpts = np.asarray(pose.keypoints)
    scores = kpts[:, 2]
    # float64 comparison, the same decision as the drawing (see draw.py).
    visible = scores.astype(np.float64) >= kpt_thr
    keypoints: list[float | int] = []
    # tolist() turns float32 values into the Python floats that equal them exactly.
    for x, y, seen in zip(kpts[:, 0].tolist(), kpts[:, 1].tolist(), visible.tolist()):
        keypoints += [x, y, 2 if seen else 0]
    bbox = list(pose.bbox)
    record: dict[str, Any] = {
        "id": int(annotation_id),
        "image_id": int(image_id),
        "category_id": PERSON_CATEGORY_ID,
        "keypoints": keypoints,
        "keypoint_scores": scores.tolist(),
        "num_keypoints": int(visible.sum()),
        "score": float(pose.score),
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
    }
    record.update(track_fields(pose))
    return record


def results_annotation(image_id: int, pose: Pose) -> dict[str, Any]:
    """One entry of a COCO results list (the reference's result file)."""
    record: dict[str, Any] = {
        "image_id": int(image_id),
        "category_id": PERSON_CATEGORY_ID,
        "keypoints": flat_keypoints(pose),
        "score": float(pose.score),
        "bbox": list(pose.bbox),
    }
    record.update(track_fields(pose))
    return record


def _pose_to_journal(pose: Pose) -> dict[str, Any]:
    entry: dict[str, Any] = {"keypoints": flat_keypoints(pose), "score": float(pose.score)}
    entry.update(track_fields(pose))
    return entry


def _pose_from_journal(entry: dict[str, Any]) -> Pose:
    keypoints = np.asarray(entry["keypoints"], dtype=np.float64).reshape(-1, 3)
    return Pose(keypoints=keypoints, score=float(entry["score"]), track_id=entry.get("track_id"))


# ---------------------------------------------------------------------------------------------
# Streaming COCO JSON


class CocoJsonWriter:
    """COCO JSON for runs of any length: constant memory, crash-safe, resumable.

    Every `add()` appends one line (image entry + poses) to the journal `PATH.partial.jsonl`,
    flushed at once and fsync'ed every `fsync_every` lines or `fsync_seconds` seconds.
    `close()` streams the journal into the final JSON (written atomically) and deletes it.
    After a crash, a writer opened with `resume=True` keeps the journal (minus a torn last line),
    `finished_sources()` tells the caller which sources to skip, and new frames are appended.

    Style 'dataset': {info, licenses, images, annotations, categories}, for `COCO()` and
    annotation tools. Style 'results': the flat list COCO evaluation takes (`coco.loadRes`).
    Annotation ids are assigned 1, 2, ... in journal order when the final file is assembled.
    Not thread-safe: use it from one (writer) thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        style: str,
        keypoints: KeypointSet,
        kpt_thr: float,
        *,
        resume: bool = False,
        fsync_every: int = 100,
        fsync_seconds: float = 5.0,
    ) -> None:
        if style not in JSON_STYLES:
            choices = ", ".join(JSON_STYLES)
            raise ConfigError(f"--json-style must be one of {choices}, got {style!r}")
        self.path = Path(path)
        self.journal_path = journal_path(self.path)
        self.style = style
        self.keypoints = keypoints
        self.kpt_thr = float(kpt_thr)
        handle, records = open_resumable(self.journal_path, resume, _journal_summary)
        self._log = LineLog(handle, fsync_every=fsync_every, fsync_seconds=fsync_seconds)
        self._keys: set[str] = set()
        self._image_ids: set[int] = set()
        self._closed = False
        if records:
            self._adopt(records)
        else:
            self._log.append(self._header())

    # -- public API -------------------------------------------------------------------------

    def finished_sources(self) -> frozenset[str]:
        """Keys of the frames already in the journal (from this run or the one it resumes)."""
        return frozenset(self._keys)

    def add(
        self,
        frame: FrameResult,
        *,
        file_name: str,
        image_id: int | None = None,
        key: str | None = None,
    ) -> int:
        """Record one finished frame; return its image id.

        `file_name` is the image's path relative to the input folder (or any name for video
        frames); `key` identifies the source for resuming (default: `file_name`; give video
        frames a per-frame key). `image_id` defaults to `frame.index + 1`: pass the index in the
        unsharded listing (`sources.global_index`) so shards never share ids, or the ground
        truth's id when the file is meant for evaluation.
        """
        if self._closed:
            raise RuntimeError("CocoJsonWriter is closed")
        key = file_name if key is None else key
        image_id = frame.index + 1 if image_id is None else int(image_id)
        if key in self._keys:
            raise ValueError(f"source {key!r} was already written to {self.path}")
        if image_id in self._image_ids:
            raise ValueError(f"image id {image_id} was already written to {self.path}")
        for pose in frame.poses:
            if len(pose.keypoints) != self.keypoints.num_joints:
                raise ValueError(
                    f"pose with {len(pose.keypoints)} joints for keypoint set "
                    f"{self.keypoints.name!r} ({self.keypoints.num_joints} joints)"
                )
        self._log.append(
            {
                "key": key,
                "image": image_record(image_id, frame, file_name),
                "poses": [_pose_to_journal(pose) for pose in frame.poses],
            }
        )
        self._keys.add(key)
        self._image_ids.add(image_id)
        return image_id

    def close(self) -> Path:
        """Assemble the final JSON from the journal (atomically) and delete the journal."""
        if not self._closed:
            self._log.close()
            self._closed = True
            with atomic_output(self.path, "w") as handle:
                if self.style == "dataset":
                    self._write_dataset(handle)
                else:
                    self._write_results(handle)
            self.journal_path.unlink()
        return self.path

    def abort(self) -> None:
        """Stop without assembling: the journal stays (synced) for a later `resume=True` run."""
        if not self._closed:
            self._log.close()
            self._closed = True

    def discard(self) -> None:
        """Stop and delete the journal: nothing of this run is kept (nor resumable)."""
        self.abort()
        self.journal_path.unlink(missing_ok=True)

    def __enter__(self) -> CocoJsonWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- journal ----------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {
            "aepose_journal": _JOURNAL_FORMAT,
            "keypoint_set": self.keypoints.name,
            "num_joints": self.keypoints.num_joints,
        }

    def _adopt(self, records: list[Any]) -> None:
        """Take over a previous run's journal after checking it was written for the same joints."""
        header, frames = records[0], records[1:]
        if header != self._header():
            found = header.get("keypoint_set") if isinstance(header, dict) else None
            self._log.close()
            raise ConfigError(
                f"{self.journal_path}: unfinished run of another kind (keypoint set "
                f"{found!r}); delete it or run without resuming"
            )
        for key, image_id in frames:
            self._keys.add(key)
            self._image_ids.add(image_id)

    def _frame_records(self) -> Iterator[dict[str, Any]]:
        records = iter_records(self.journal_path)
        next(records, None)  # header
        return records

    # -- final file -------------------------------------------------------------------------

    def _write_dataset(self, handle: IO[str]) -> None:
        info = {
            "description": "poses estimated by aepose",
            "keypoint_set": self.keypoints.name,
            "kpt_thr": self.kpt_thr,
        }
        handle.write('{"info":' + dumps(info) + ',"licenses":[],\n"images":[')
        _write_items(handle, (record["image"] for record in self._frame_records()))
        handle.write('],\n"annotations":[')
        _write_items(handle, self._dataset_annotations())
        handle.write('],\n"categories":' + dumps(coco_categories(self.keypoints)) + "}\n")

    def _dataset_annotations(self) -> Iterator[dict[str, Any]]:
        annotation_id = 0
        for record in self._frame_records():
            for entry in record["poses"]:
                annotation_id += 1
                yield dataset_annotation(
                    annotation_id, record["image"]["id"], _pose_from_journal(entry), self.kpt_thr
                )

    def _write_results(self, handle: IO[str]) -> None:
        handle.write("[")
        _write_items(
            handle,
            (
                results_annotation(record["image"]["id"], _pose_from_journal(entry))
                for record in self._frame_records()
                for entry in record["poses"]
            ),
        )
        handle.write("]\n")


def _journal_summary(record: dict[str, Any]) -> dict[str, Any] | tuple[str, int]:
    """What resuming needs of a journal line: the header whole, else (key, image id)."""
    if "aepose_journal" in record:
        return record
    return str(record["key"]), int(record["image"]["id"])


def journal_path(output: str | os.PathLike[str]) -> Path:
    """The journal of a streamed COCO JSON output: `OUTPUT.partial.jsonl`."""
    output = Path(output)
    return output.with_name(output.name + JOURNAL_SUFFIX)


def is_complete(output: str | os.PathLike[str]) -> bool:
    """True when a streamed COCO JSON output was finished (file present, no journal left)."""
    return Path(output).is_file() and not journal_path(output).exists()


def _write_items(handle: IO[str], items: Iterator[dict[str, Any]]) -> None:
    """Write JSON array items one per line, without holding them all in memory."""
    separator = "\n"
    for item in items:
        handle.write(separator + dumps(item))
        separator = ",\n"
