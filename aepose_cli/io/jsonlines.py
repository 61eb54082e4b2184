"""JSON lines: the `--jsonl` writer, and the append-only line journal the COCO writer uses.

A journal line is flushed at once and fsync'ed every few lines or seconds; a crash leaves at
most one torn last line, which resuming cuts off before appending.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from ..types import FrameResult, Pose
from .filesystem import FileScope

T = TypeVar("T")


def dumps(value: Any) -> str:
    """Compact JSON; NaN/inf refused so the file stays valid JSON for every reader."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Line journals (shared by the COCO writer and the JSON lines writer)


class JournalCorrupt(ValueError):
    """A JSON-lines journal has a bad line before its end (not a line torn by a crash)."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}: line {line} {reason}")
        self.path = path
        self.line = line


def _scan_lines(path: Path, summarise: Callable[[dict[str, Any]], T]) -> tuple[list[T], int]:
    """Summarise each valid record of a JSON-lines file; return the summaries and the byte
    length the valid lines occupy.

    The last line may be torn by a crash (no newline, or not valid JSON): it counts as not
    written. A bad line anywhere before the last is not what a crash leaves, so it raises
    `JournalCorrupt` (nothing is cut off). `summarise` raising KeyError, TypeError or ValueError
    on a record means the record is not of the expected shape: `JournalCorrupt` too. Only the
    (small) summaries are kept, so resuming a run of any length takes little memory.
    """
    summaries: list[T] = []
    good_length = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            torn = not line.endswith(b"\n")
            record: Any = None
            if not torn:
                try:
                    record = json.loads(line)
                except ValueError:
                    torn = True
            if torn:
                if handle.read(1):
                    raise JournalCorrupt(path, number, "is not valid JSON")
                break
            try:
                summaries.append(summarise(record))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise JournalCorrupt(path, number, "is not a record of this journal") from None
            good_length += len(line)
    return summaries, good_length


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the valid records of a JSON-lines file (same stopping rule as `_scan_lines`)."""
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                return
            try:
                yield json.loads(line)
            except ValueError:
                return


class LineLog:
    """Append-only JSON lines: each line flushed at once, fsync'ed every few lines or seconds."""

    def __init__(self, handle: IO[str], *, fsync_every: int, fsync_seconds: float) -> None:
        self._handle = handle
        self._fsync_every = fsync_every
        self._fsync_seconds = fsync_seconds
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        # One write call per line: a crash leaves at most one torn line, at the end.
        self._handle.write(dumps(record) + "\n")
        self._handle.flush()
        self._unsynced += 1
        if (
            self._unsynced >= self._fsync_every
            or time.monotonic() - self._last_sync >= self._fsync_seconds
        ):
            self.sync()

    def sync(self) -> None:
        self._handle.flush()
        try:
            os.fsync(self._handle.fileno())
        except (OSError, io.UnsupportedOperation):
            pass  # a pipe or terminal (stdout) cannot be fsync'ed
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self, *, quiet: bool = False) -> None:
        """Sync and close; `quiet` (for failure paths) lets a sync error (full disk) pass, so the
        error that stopped the run is the one reported."""
        if self._handle.closed:
            return
        try:
            self.sync()
        except OSError:
            if not quiet:
                raise
        finally:
            try:
                self._handle.close()
            except OSError:
                if not quiet:
                    raise


def open_resumable(
    path: Path, resume: bool, summarise: Callable[[dict[str, Any]], T], *, lock: bool = False, scope: FileScope | None = None,
) -> tuple[IO[str], list[T]]:
    """Open a JSON-lines file for appending; with `resume`, keep its valid lines (returning their
    summaries) and cut off a torn tail so new lines start on a line boundary.

    With `lock`, the file is opened without truncating it and locked (`fcntl.flock`, exclusive,
    non-blocking) first; if another process holds the lock, `JournalBusy` is raised and the
    file is left as it was. The lock lasts as long as the returned handle is open. `scope`: the
    run's `FileScope`, which declared `path` (None: a scope of this file alone).
    """
    scope = scope or FileScope.of(path)
    if lock:
        fd = scope.open_locked(path, on_busy=lambda: JournalBusy(path))
        try:
            if resume:
                summaries, good_length = _scan_lines(path, summarise)
            else:
                summaries, good_length = [], 0
            scope.truncate(fd, path, good_length)
            os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "a", encoding="utf-8"), summaries
    if resume and path.exists():
        summaries, good_length = _scan_lines(path, summarise)
        with scope.open_write(path, "r+b") as raw:
            raw.truncate(good_length)
        return scope.open_write(path, "a"), summaries
    return scope.open_write(path, "w"), []


class JournalBusy(Exception):
    """Another process holds the lock of a journal."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


# ---------------------------------------------------------------------------------------------
# JSON lines


def stdout_is_open() -> bool:
    """Whether this process has a standard output to write to (`>&-` closes it: then
    `sys.stdout` is None, or its descriptor is not open)."""
    stream = sys.stdout
    if stream is None:
        return False
    try:
        fd = stream.fileno()
    except (io.UnsupportedOperation, AttributeError):
        return True  # a Python stream without a descriptor (a test's capture): writable
    except ValueError:
        return False  # closed
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def track_fields(pose: Pose) -> dict[str, int]:
    """`{"track_id": N}` for a tracked pose, `{}` otherwise: how every output file carries ids."""
    return {} if pose.track_id is None else {"track_id": int(pose.track_id)}


def frame_to_json(frame: FrameResult) -> dict[str, Any]:
    """One frame as a JSON-lines record: keypoints as [[x, y, score], ...] per person."""
    width, height = frame.image_size
    poses = []
    for pose in frame.poses:
        entry: dict[str, Any] = {
            "keypoints": np.asarray(pose.keypoints)[:, :3].tolist(),
            "score": float(pose.score),
            "bbox": list(pose.bbox),
        }
        entry.update(track_fields(pose))
        poses.append(entry)
    return {
        "index": int(frame.index),
        "source": frame.source,
        "timestamp": None if frame.timestamp is None else float(frame.timestamp),
        "width": int(width),
        "height": int(height),
        "poses": poses,
        "timings": {name: float(seconds) for name, seconds in frame.timings.items()},
    }


class JsonLinesWriter:
    """`--jsonl`: one JSON line per frame, flushed as it is written so others can follow it live.

    `path` '-' writes to standard output. The file is written in place, from scratch; a crash
    leaves complete lines and at most one torn last line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync_every: int = 100,
        fsync_seconds: float = 5.0,
        scope: FileScope | None = None,
    ) -> None:
        self.path = None if os.fspath(path) == "-" else Path(path)
        if self.path is None:
            if not stdout_is_open():
                from ..errors import OutputError

                raise OutputError("--jsonl -: standard output is closed; give a file instead")
            handle: IO[str] = sys.stdout
        else:
            handle, _ = open_resumable(self.path, False, lambda record: None, scope=scope)
        self._log = LineLog(handle, fsync_every=fsync_every, fsync_seconds=fsync_seconds)
        self._closed = False

    def add(self, frame: FrameResult) -> None:
        if self._closed:
            raise RuntimeError("JsonLinesWriter is closed")
        self._log.append(frame_to_json(frame))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.path is None:
            self._log.sync()  # flush stdout; never close it
        else:
            self._log.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()
