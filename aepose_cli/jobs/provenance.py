"""What produced an output, and THE check that a finished JSON was made by this run.

A journal's header and a finished dataset JSON (`info.aepose`) record the input root, the input
names, the checkpoint's sha256 and every inference setting (`provenance`); a video run adds its
frame range, stride, tracking and drawing options (`jobs.video.job_provenance`). `--skip-existing`
trusts a finished output only when a run with the same record made it (`check_finished_json`):
the folder command and the video command ask the same question here, in one place.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import InferenceConfig, ModelChoice
from ..errors import ConfigError
from ..io.coco_json import provenance_mismatch
from ..types import Progress

_RETRY = "pass another --json or run without --skip-existing"


def provenance(
    input_root: str | os.PathLike[str] | None, keys: Iterable[str], model: ModelChoice, config: InferenceConfig, *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """What produced a journal or a finished JSON: input root, input keys, checkpoint sha256
    and every inference setting (batch size aside: it changes the pace, not the poses). A zoo
    model is fetched into the cache first (`progress`: where the download shows)."""
    from ..zoo import checkpoint_sha256, resolve_checkpoint

    path, _ = resolve_checkpoint(model.name, model.checkpoint, progress=progress)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items() if k != "batch_size"}
    return {
        "input_root": None if input_root is None else os.path.realpath(input_root),
        "inputs": list(keys),
        "checkpoint_sha256": checkpoint_sha256(path),
        "keypoints": model.keypoints,
        "settings": settings,
    }


def comparable(produced_by: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that decide whether a finished output is this run's: not the
    inputs as typed (`./a.mp4` and `a.mp4` are one file: `input_root` holds the real path; a
    folder's images are compared by name afterwards), not a video's batch size (it changes the
    pace; poses only by float rounding, which matters to an exact resume, not to a finished file)."""
    record = {**produced_by, "inputs": None}
    if isinstance(produced_by.get("video"), dict):
        record["video"] = {k: v for k, v in produced_by["video"].items() if k != "batch_size"}
    return record


def check_finished_json(path: str | os.PathLike[str], produced_by: dict[str, Any]) -> dict[str, Any]:
    """A finished JSON met by `--skip-existing`: its content when a run with this record made it
    (`comparable` fields equal). ConfigError, naming the file and the first difference, when it
    is not a JSON this tool wrote, records nothing of what produced it, or another run made it
    (other input folder, checkpoint, settings or frame range)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{path}: not a COCO JSON this tool wrote; {_RETRY}") from None
    info = data.get("info") if isinstance(data, dict) else None
    made_by = info.get("aepose") if isinstance(info, dict) else None
    if not isinstance(made_by, dict):
        raise ConfigError(f"{path}: finished without a record of what produced it (a results-style or older file); {_RETRY}")
    reason = provenance_mismatch(comparable(made_by), comparable(produced_by))
    if reason is not None:
        raise ConfigError(f"{path}: made by another run ({reason}); {_RETRY}")
    return data
