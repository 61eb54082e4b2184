"""Streaming COCO JSON: dataset files for annotation tools, or results lists for evaluation.

Long runs stream their COCO JSON through an append-only journal (`NAME.partial.jsonl`, one line
per finished image) so that memory stays flat and a crashed or interrupted run resumes where it
stopped; the final JSON is assembled from the journal, atomically, at `close()`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..keypoints import KeypointSet
from ..types import FrameResult, Pose
from .atomic import atomic_output
from .filesystem import FileScope
from .jsonlines import JournalBusy, JournalCorrupt, LineLog, dumps, iter_records, open_resumable, track_fields
from .output_paths import JOURNAL_MAGIC, journal_path

JSON_STYLES: tuple[str, ...] = ("dataset", "results")
PERSON_CATEGORY_ID = 1
_JOURNAL_FORMAT = 2


def is_own_journal(path: str | os.PathLike[str]) -> bool:
    """Whether `path` begins as a journal of this tool does (read just before deleting it)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False
_PID_WIDTH = 10  # the header's writer pid is padded, so a resumed run can overwrite it in place


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
    """COCO `annotations` entry for annotation tools and `COCO()`: every field of COCO's own
    person_keypoints files (`id`, `image_id`, `category_id`, `segmentation`, `area`, `bbox`,
    `iscrowd`, `keypoints`, `num_keypoints`), so that importers such as Datumaro's
    `coco_person_keypoints` (CVAT) take it without a warning, plus `score` and
    `keypoint_scores`.

    `keypoints` carries COCO visibility flags: 2 where the score is at least `kpt_thr`, 0 below
    (coordinates are kept either way); the raw scores travel in `keypoint_scores`.
    `num_keypoints` counts the joints at or above `kpt_thr`. `bbox` and `area` span all K
    keypoints, as in the reference's result file and pycocotools' `loadRes`; `segmentation` is
    empty (a pose has no outline) and `iscrowd` 0.
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
        "segmentation": [],
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

    Exclusive and self-describing: the journal is locked (`fcntl.flock`) from opening until
    the final file is in place or the run stops, so a second writer of the same output fails
    at once (OutputError naming the holder's pid) and never truncates the first one's journal.
    `provenance` (a JSON-able dict: input root, input keys, checkpoint sha256, inference
    settings) is recorded in the journal's header and in the dataset file's `info.aepose`;
    resuming a journal whose provenance differs raises ConfigError saying which field differs.
    A bad line before the journal's end is a ConfigError; a torn last line is cut off.
    `keep_journal=False` deletes the journal when the run fails (for runs that cannot resume).
    """

    # The styles of final file this writer assembles (a subclass writes others from the same journal).
    STYLES: tuple[str, ...] = JSON_STYLES

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
        provenance: dict[str, Any] | None = None,
        keep_journal: bool = True,
        scope: FileScope | None = None,
        header_extra: dict[str, Any] | None = None,
    ) -> None:
        if style not in self.STYLES:
            choices = ", ".join(self.STYLES)
            raise ConfigError(f"--json-style must be one of {choices}, got {style!r}")
        self.path = Path(path)
        self.journal_path = journal_path(self.path)
        self.style = style
        self.keypoints = keypoints
        self.kpt_thr = float(kpt_thr)
        self.provenance = provenance
        self.keep_journal = keep_journal
        self.header_extra = dict(header_extra or {})
        self.scope = scope or FileScope.of(self.path, self.journal_path)
        try:
            handle, records = open_resumable(self.journal_path, resume, _journal_summary, lock=True, scope=self.scope)
        except JournalBusy:
            raise OutputError(
                f"{self.path}: another aepose run{_holder(self.journal_path)} is writing it; "
                "wait for it to finish or choose another output"
            ) from None
        except JournalCorrupt as error:
            raise ConfigError(f"{error}; delete {self.journal_path.name} or run without resuming") from None
        except OSError as error:
            from .output_plan import output_error

            raise output_error(error, self.journal_path) from None
        self._log = LineLog(handle, fsync_every=fsync_every, fsync_seconds=fsync_seconds)
        self._keys: set[str] = set()
        self._image_ids: set[int] = set()
        self._closed = False
        if records:
            self._adopt(records)
        else:
            try:
                self._log.append(self._header())
                self._log.sync()
            except OSError as error:
                self.discard()
                from .output_plan import output_error

                raise output_error(error, self.journal_path) from None

    def adopt_final(self, final: dict[str, Any], keys: set[str]) -> int:
        """Seed a fresh journal with the images of a finished dataset-style file of the same
        run (its `images` whose file name is in `keys`, and their poses), so that a resumed
        run redoes only what that file lacks (images that failed). Returns how many it took."""
        people: dict[int, list[dict[str, Any]]] = {}
        for ann in final.get("annotations", []):
            people.setdefault(ann["image_id"], []).append(ann)
        taken = 0
        for image in final.get("images", []):
            name = image.get("file_name")
            if name not in keys or name in self._keys:
                continue
            poses = []
            for ann in people.get(image["id"], []):
                flat = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
                flat[:, 2] = ann["keypoint_scores"]
                entry: dict[str, Any] = {"keypoints": flat.ravel().tolist(), "score": float(ann["score"])}
                if "track_id" in ann:
                    entry["track_id"] = int(ann["track_id"])
                poses.append(entry)
            self._log.append({"key": name, "image": image, "poses": poses})
            self._keys.add(name)
            self._image_ids.add(int(image["id"]))
            taken += 1
        return taken

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
        source: str | None = None,
    ) -> int:
        """Record one finished frame; return its image id.

        `file_name` is the image's path relative to the input folder (or any name for video
        frames); `key` identifies the source for resuming (default: `file_name`; give video
        frames a per-frame key). `image_id` defaults to `frame.index + 1`: pass the index in the
        unsharded listing (`sources.global_index`) so shards never share ids, or the ground
        truth's id when the file is meant for evaluation. `source`: what the frame came from
        (the video, the image as given), for writers that keep it (`frame.source` by default).
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
        record = {
            "key": key,
            "image": image_record(image_id, frame, file_name),
            "poses": [_pose_to_journal(pose) for pose in frame.poses],
            **self._extra_fields(frame, source),
        }
        try:
            self._log.append(record)
        except OSError as error:
            from .output_plan import output_error

            raise output_error(error, self.journal_path) from None
        self._keys.add(key)
        self._image_ids.add(image_id)
        return image_id

    def has(self, key: str) -> bool:
        """Whether the frame `key` is in the journal already."""
        return key in self._keys

    def _extra_fields(self, frame: FrameResult, source: str | None) -> dict[str, Any]:
        """Fields a subclass keeps in each journal line besides the image and its poses."""
        return {}

    def close(self) -> Path:
        """Assemble the final JSON from the journal (atomically) and delete the journal.

        The journal stays locked until it is deleted, so no other run can take it over while
        the final file is assembled. If assembling fails (a full disk), the journal is kept
        and unlocked, as `abort()` leaves it."""
        if not self._closed:
            self._closed = True
            try:
                self._log.sync()
                with atomic_output(self.path, "w", scope=self.scope) as handle:
                    self._write_final(handle)
                self.scope.remove(self.journal_path, proof=is_own_journal)
            except OSError as error:
                from .output_plan import output_error

                raise output_error(error, self.path) from None
            finally:
                self._log.close(quiet=True)
        return self.path

    @property
    def frames(self) -> int:
        """Frames in the journal (this run's and those of the run it resumed)."""
        return len(self._keys)

    def abort(self) -> None:
        """Stop without assembling: the journal stays (synced) for a later `resume=True` run."""
        if not self._closed:
            self._log.close(quiet=True)
            self._closed = True

    def discard(self) -> None:
        """Stop and delete the journal: nothing of this run is kept (nor resumable)."""
        if not self._closed:
            self.scope.remove(self.journal_path, proof=is_own_journal)  # still locked: nobody else uses it
        self.abort()

    def __enter__(self) -> CocoJsonWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        elif self.keep_journal and self._keys:
            self.abort()
        else:
            self.discard()

    # -- journal ----------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        # "aepose_journal" first: every journal begins with JOURNAL_MAGIC.
        return {
            "aepose_journal": _JOURNAL_FORMAT,
            "writer_pid": str(os.getpid()).rjust(_PID_WIDTH),
            "keypoint_set": self.keypoints.name,
            "num_joints": self.keypoints.num_joints,
            "style": self.style,
            "provenance": self.provenance,
            **self.header_extra,
        }

    def _adopt(self, records: list[Any]) -> None:
        """Take over a previous run's journal after checking it was written by the same kind of
        run: same format, keypoint set, style, and provenance (inputs, checkpoint, settings)."""
        header, frames = records[0], records[1:]
        reason = _header_mismatch(header, self._header())
        if reason is not None:
            self._log.close(quiet=True)
            raise ConfigError(
                f"{self.journal_path}: unfinished run of another kind ({reason}); "
                "delete it or run without resuming"
            )
        for entry in frames:
            if not isinstance(entry, tuple):
                self._log.close(quiet=True)
                raise ConfigError(f"{self.journal_path}: a second header in the journal; delete it or run without resuming")
            key, image_id = entry
            self._keys.add(key)
            self._image_ids.add(image_id)
        _rewrite_pid(self._log, self.journal_path, self.scope)

    def _frame_records(self) -> Iterator[dict[str, Any]]:
        records = iter_records(self.journal_path)
        next(records, None)  # header
        return records

    # -- final file -------------------------------------------------------------------------

    def _write_final(self, handle: IO[str]) -> None:
        """The final file, streamed from the journal into `handle` (an atomic temporary)."""
        if self.style == "dataset":
            self._write_dataset(handle)
        else:
            self._write_results(handle)

    def _write_dataset(self, handle: IO[str]) -> None:
        info: dict[str, Any] = {
            "description": "poses estimated by aepose",
            "keypoint_set": self.keypoints.name,
            "kpt_thr": self.kpt_thr,
        }
        if self.provenance is not None:
            info["aepose"] = self.provenance
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
    if not isinstance(record["key"], str) or not isinstance(record["poses"], list):
        raise TypeError("not a frame record")
    image_id = record["image"]["id"]
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise TypeError("image id is not an integer")
    return record["key"], image_id


_PROVENANCE_NAMES = {
    "input_root": "input folder",
    "inputs": "input images",
    "checkpoint_sha256": "checkpoint",
    "settings": "inference settings",
}


def _header_mismatch(found: Any, wanted: dict[str, Any]) -> str | None:
    """Why a journal's header does not fit this run (None when it does), in a few words."""
    if not isinstance(found, dict) or found.get("aepose_journal") != wanted["aepose_journal"]:
        return "journal format {!r}".format(found.get("aepose_journal") if isinstance(found, dict) else None)
    for field in ("keypoint_set", "num_joints", "style"):
        if found.get(field) != wanted[field]:
            return f"{field.replace('_', ' ')} {found.get(field)!r}, now {wanted[field]!r}"
    return provenance_mismatch(found.get("provenance") or {}, wanted.get("provenance") or {})


def provenance_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two records of what produced an output (None: nothing), in a few
    words naming the first difference: 'other checkpoint: ...', 'other settings: scales ...'."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "no record of what produced it"
    for field in sorted(set(old) | set(new)):
        if old.get(field) != new.get(field):
            name = _PROVENANCE_NAMES.get(field, field)
            then, now = old.get(field), new.get(field)
            if isinstance(then, dict) and isinstance(now, dict):
                diff = [k for k in sorted(set(then) | set(now), key=str) if then.get(k) != now.get(k)]
                return f"other {name}: " + ", ".join(f"{k} {_short(then.get(k))} then, {_short(now.get(k))} now" for k in diff[:3])
            if field == "inputs":
                count = (lambda v: len(v) if isinstance(v, list) else "?")
                return f"other {name} ({count(then)} then, {count(now)} now)"
            if isinstance(then, dict) != isinstance(now, dict):
                return f"other {name}: {_short(then)} then, an object now" if isinstance(now, dict) else f"other {name}: an object then, {_short(now)} now"
            return f"other {name}: {_short(then)} then, {_short(now)} now"
    return None


def _short(value: Any) -> str:
    """A value in a message: its repr, cut to 80 characters (a hostile file's value stays one
    short line; a sha256, 66 with its quotes, is named whole)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _holder(journal: Path) -> str:
    """' (pid N)' read from a locked journal's header, or '' when it cannot be read yet."""
    try:
        with open(journal, "rb") as handle:
            first = handle.readline()
        pid = int(str(json.loads(first).get("writer_pid", "")).strip())
    except (OSError, ValueError, AttributeError):
        return ""
    return f" (pid {pid})"


def _rewrite_pid(log: LineLog, journal: Path, scope: FileScope) -> None:
    """A resumed journal's header names the pid now holding it (same width, so in place)."""
    with open(journal, "rb") as handle:
        first = handle.readline()
    marker = b'"writer_pid":"'
    at = first.find(marker)
    if at < 0:
        return
    try:
        json.loads(first)
    except ValueError:
        return
    log.sync()
    scope.overwrite_at(journal, at + len(marker), str(os.getpid()).rjust(_PID_WIDTH).encode()[:_PID_WIDTH])


def trim_journal(output: str | os.PathLike[str], keep: Callable[[int], int], *, scope: FileScope | None = None) -> int:
    """Cut OUTPUT's journal after its first `keep(n)` frame lines (n: the valid frame lines it
    holds; a torn last line goes too), under its lock; returns how many it kept.

    For an exact resume: the caller decides where the stopped run's work can be continued
    without changing what an uninterrupted run would have computed. OutputError when another
    run holds the journal, ConfigError when a line before the end is not JSON. `scope`: the
    run's `FileScope` (None: a scope of the journal alone)."""
    path = journal_path(output)
    scope = scope or FileScope.of(path)
    try:
        fd = scope.open_locked(path, on_busy=lambda: JournalBusy(path))
    except JournalBusy:
        raise OutputError(
            f"{output}: another aepose run{_holder(path)} is writing it; wait for it to finish or choose another output"
        ) from None
    try:
        lengths: list[int] = []
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                try:
                    json.loads(line)
                except ValueError:
                    if handle.read(1):
                        raise ConfigError(f"{path}: line {len(lengths) + 1} is not valid JSON; delete it or run without resuming") from None
                    break
                lengths.append(len(line))
        frames = max(0, len(lengths) - 1)  # the first line is the header
        kept = min(frames, max(0, keep(frames))) if lengths else 0
        scope.truncate(fd, path, sum(lengths[: 1 + kept]))
        return kept
    finally:
        os.close(fd)


def is_complete(output: str | os.PathLike[str]) -> bool:
    """True when a streamed COCO JSON output was finished (file present, no journal left)."""
    return Path(output).is_file() and not journal_path(output).exists()


def _write_items(handle: IO[str], items: Iterator[dict[str, Any]]) -> None:
    """Write JSON array items one per line, without holding them all in memory."""
    separator = "\n"
    for item in items:
        handle.write(separator + dumps(item))
        separator = ",\n"
