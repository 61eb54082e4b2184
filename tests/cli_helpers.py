"""Shared helpers of the end-to-end CLI tests: run `aepose` as a real subprocess and judge it.

The CLI tests exercise the installed command exactly as a user does (`python -m aepose_cli`),
so they catch what in-process tests cannot: exit codes, what lands on stderr, tracebacks that
escape, files left behind. The network is slow on a shared CPU, so the tests use the tiny
official-layout checkpoint and, where the option under test does not need it, no flip test and
a reduced test scale (`FAST`): the plumbing is the same, the network input is 16x smaller.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from paths import DATA, GOLDEN, SHARED, TINY_CHECKPOINT  # noqa: F401

COCO_IMAGES = DATA / "mmpose-testdata" / "coco"
ZIDANE = DATA / "ultralytics-assets" / "zidane.jpg"
BUS = DATA / "ultralytics-assets" / "bus.jpg"
MINI_VAL = DATA / "coco-mini-val2017"
MINI_VAL_ANN = MINI_VAL / "annotations" / "person_keypoints_val2017.json"

# --device cpu: the tests compare with the library on CPU, also on machines with a GPU.
MODEL = ["--checkpoint", str(TINY_CHECKPOINT), "--device", "cpu"]
# Same code paths, much less arithmetic: scale 0.25 puts a 128-pixel short side into the network.
FAST = [*MODEL, "--no-flip", "--scales", "0.25"]

DEFAULT_TIMEOUT_S = 300


def run_cli(
    *args: Any, cwd: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m aepose_cli ARGS` to completion; text output captured."""
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**cli_env(), **(env_extra or {})},
    )


def cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "aepose_cli", *(str(a) for a in args)]


def cli_env() -> dict[str, str]:
    """A wide, colourless terminal so rich never wraps or styles what the tests parse.

    OMP_WAIT_POLICY=PASSIVE: on a busy machine (or with the pipeline's own reader and grouping
    threads beside the network), OpenMP threads that spin while waiting for a descheduled peer
    make every convolution 10-40x slower. Passive waiting keeps the thread count, hence the
    numbers, and only stops the spinning.
    """
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def describe(proc: subprocess.CompletedProcess) -> str:
    """Everything a failing assertion should show about a run."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user error: non-zero exit, no traceback, exactly one `aepose: error:` line on stderr
    (and nothing else there), naming every fragment. Returns that line."""
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(proc)
    line = lines[0]
    assert line.startswith("aepose: error: "), describe(proc)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def keypoint_array(annotation: dict) -> np.ndarray:
    """[K, 3] (x, y, score) of a dataset-style annotation (scores from `keypoint_scores`) or a
    results-style one (scores inline)."""
    flat = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
    if "keypoint_scores" in annotation:
        flat[:, 2] = annotation["keypoint_scores"]
    return flat


def poses_by_image(coco_json: dict) -> dict[int, list[np.ndarray]]:
    """Keypoints of every annotation of a dataset-style COCO JSON, per image id, in file order."""
    grouped: dict[int, list[np.ndarray]] = {image["id"]: [] for image in coco_json["images"]}
    for annotation in coco_json["annotations"]:
        grouped[annotation["image_id"]].append(keypoint_array(annotation))
    return grouped


def assert_same_poses(actual: list[np.ndarray], expected: list[np.ndarray], what: str) -> None:
    """Same number of people, in the same order, with the same keypoints (float32 exact)."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} people, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(
            np.asarray(got, np.float32), np.asarray(want, np.float32)[:, :3], err_msg=f"{what}, person {i}"
        )
