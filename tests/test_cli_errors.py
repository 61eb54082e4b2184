"""User errors end to end: each is one `aepose: error:` line, the README's exit code, no traceback.

The broken inputs are made from real files at run time: the tiny official checkpoint cut short,
a `.pth` of unrelated tensors, a photo that is really text. The truncated checkpoint runs as a
real subprocess (what the process prints while torch fails to unpickle) and the unknown model
through the installed `aepose` console script; the others run the command in this process
(`run_in_process`), with the same exit code and stderr checks.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from aepose_cli import errors

from cli_helpers import (
    DOCUMENTED_EXIT_CODES,
    FAST,
    TINY_CHECKPOINT,
    ZIDANE,
    assert_one_line_error,
    run_cli,
    run_console_script,
    run_in_process,
)
from paths import needs_shared

FAST_WITHOUT_MODEL = FAST[2:]  # the fast options minus --checkpoint

# Every user-facing failure type and the README's code for it (README "Exit codes").
EXIT_CODES = {
    errors.AeposeError: 1,
    errors.InputError: 2,
    errors.UnnamedInputError: 2,
    errors.ConfigError: 2,
    errors.AnnotationError: 2,
    errors.MissingDependencyError: 2,
    errors.CheckpointError: 3,
    errors.DownloadError: 4,
    errors.BackendError: 5,
    errors.OutputError: 6,
    errors.EngineError: 7,
    errors.Interrupted: 130,
}


def _subclasses(cls: type) -> set[type]:
    return {cls} | {sub for direct in cls.__subclasses__() for sub in _subclasses(direct)}


def test_every_error_type_exits_with_the_readme_code():
    assert set(DOCUMENTED_EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 7, 130, 143, 129}
    # 143 and 129: Interrupted raised for SIGTERM / SIGHUP (128 + the signal's number)
    assert errors.Interrupted("kept", signal="SIGTERM").exit_code == 143
    assert errors.Interrupted("kept", signal="SIGHUP").exit_code == 129
    assert _subclasses(errors.AeposeError) == set(EXIT_CODES), "a new error type: add it here with its README code"
    assert {cls.__name__: cls.exit_code for cls in EXIT_CODES} == {cls.__name__: code for cls, code in EXIT_CODES.items()}


@pytest.fixture()
def photo(tmp_path) -> Path:
    target = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, target)
    return target


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".pose" in p.name)


def _truncated(tmp_path: Path) -> tuple[list, list[str]]:
    broken = tmp_path / "cut.pth"
    data = TINY_CHECKPOINT.read_bytes()
    broken.write_bytes(data[: len(data) * 2 // 3])
    return ["--checkpoint", broken], [str(broken)]


def _foreign(tmp_path: Path) -> tuple[list, list[str]]:
    foreign = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.randn(10, 512), "fc.bias": torch.zeros(10), "epoch": torch.tensor(3)}, foreign)
    return ["--checkpoint", foreign], [str(foreign)]


def _wrong_keypoints(tmp_path: Path) -> tuple[list, list[str]]:
    return ["--checkpoint", TINY_CHECKPOINT, "--keypoints", "aic"], ["17", "aic", "14"]


def _missing(tmp_path: Path) -> tuple[list, list[str]]:
    missing = tmp_path / "nowhere" / "model.pth"
    return ["--checkpoint", missing], [str(missing)]


UNUSABLE_CHECKPOINTS = {"truncated": _truncated, "foreign": _foreign, "wrong-keypoints": _wrong_keypoints, "missing": _missing}


@pytest.mark.cli
@needs_shared
@pytest.mark.parametrize("how", UNUSABLE_CHECKPOINTS)
def test_unusable_checkpoint_is_exit_3(tmp_path, photo, how):
    args, fragments = UNUSABLE_CHECKPOINTS[how](tmp_path)
    run = run_cli if how == "truncated" else run_in_process
    proc = run("image", photo, *args, *FAST_WITHOUT_MODEL)
    assert_one_line_error(proc, *fragments, code=3)
    assert _outputs(tmp_path) == []


def _text_named_jpg(tmp_path: Path) -> tuple[Path, list[str]]:
    text = tmp_path / "photo.jpg"
    text.write_text("this is not a JPEG\n")
    return text, [str(text)]


def _gone(tmp_path: Path) -> tuple[Path, list[str]]:
    missing = tmp_path / "gone.jpg"
    return missing, [str(missing), "no such file"]


@pytest.mark.cli
@needs_shared
@pytest.mark.parametrize("make", [_text_named_jpg, _gone], ids=["unreadable", "missing"])
def test_unusable_image_is_exit_2(tmp_path, make):
    path, fragments = make(tmp_path)
    proc = run_in_process("image", path, *FAST)
    assert_one_line_error(proc, *fragments, code=2)
    assert _outputs(tmp_path) == []  # no empty JSON, no drawing


@pytest.mark.cli
def test_download_of_an_unknown_model(tmp_path):
    """Through the installed `aepose` console script (the entry point a user types)."""
    proc = run_console_script("models", "--download", "hrnet_w99_coco", cwd=tmp_path)
    assert_one_line_error(proc, "unknown model 'hrnet_w99_coco'", "hrnet_w32_coco", code=2)
    assert proc.stdout == ""
