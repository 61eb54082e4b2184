"""`--csv`: the keypoints as one table, a row per person per frame per keypoint, for pandas or a
spreadsheet (motion analysis in sports, ergonomics, behaviour).

It is written as the COCO JSON is (`io.coco_json.CocoJsonWriter`, whose journal it shares the
shape of): each finished frame is one line of a journal beside it (`NAME.csv.partial.jsonl`,
flushed at once, locked while the run writes it, headed by what produced it), so memory stays
flat, a crash loses nothing and `--skip-existing` resumes; the final CSV is assembled from the
journal and appears whole, by one rename, when the run ends.

Columns (`CSV_COLUMNS`): `source` (the video, or the image as named in the JSON), `image_id`
(the frame's id in the COCO JSON of the same run), `frame` (the frame's index in its video, 0 for
a still image), `time_s` (its timestamp in seconds; empty for a still image), `track_id` (with
`--track`; empty otherwise), `person` (the person's index in the frame, as in the JSON's order),
`person_score`, `keypoint` (the keypoint set's name of the joint), `x`, `y` (original-image
pixels) and `score`. Numbers are written as the JSON writes them (the shortest text that reads
back to the same float), so the table and the JSON hold the same values.
"""
from __future__ import annotations

import csv
import os
from typing import IO, Any

from ..types import FrameResult
from .coco_json import CocoJsonWriter

CSV_COLUMNS: tuple[str, ...] = (
    "source", "image_id", "frame", "time_s", "track_id", "person", "person_score", "keypoint", "x", "y", "score",
)
CSV_STYLE = "csv"


class KeypointCsvWriter(CocoJsonWriter):
    """The `--csv` table of a run: the COCO writer's journal, crash safety, lock, provenance
    check and resume (see `CocoJsonWriter`), with a CSV as the final file.

    `KeypointCsvWriter(path, keypoints, *, resume=..., provenance=..., keep_journal=..., scope=...)`;
    `add(frame, file_name=..., image_id=..., key=..., source=...)` as the COCO writer's.
    """

    STYLES = (CSV_STYLE,)

    def __init__(self, path: str | os.PathLike[str], keypoints, **options: Any) -> None:
        # kpt_thr does not change the table (every keypoint is a row, with its score).
        super().__init__(path, CSV_STYLE, keypoints, 0.0, **options)

    def _extra_fields(self, frame: FrameResult, source: str | None) -> dict[str, Any]:
        return {"source": source if source is not None else frame.source}

    def _write_final(self, handle: IO[str]) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        names = self.keypoints.names
        for record in self._frame_records():
            image = record["image"]
            timestamp = image.get("timestamp")
            head = [record.get("source", image["file_name"]), image["id"], image.get("frame_index", 0), "" if timestamp is None else timestamp]
            for person, entry in enumerate(record["poses"]):
                track = entry.get("track_id", "")
                values = entry["keypoints"]
                writer.writerows(
                    [*head, track, person, entry["score"], names[joint], values[3 * joint], values[3 * joint + 1], values[3 * joint + 2]]
                    for joint in range(len(names))
                )


def is_own_csv(path: str | os.PathLike[str]) -> bool:
    """Whether a finished CSV begins with this tool's header row (`CSV_COLUMNS`)."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.rstrip("\r\n") == ",".join(CSV_COLUMNS)
