"""User errors end to end: each is one `aepose: error:` line, a non-zero exit, no traceback.

The broken inputs are made from real files at run time: the tiny official checkpoint cut short,
a `.pth` of unrelated tensors, a photo that is really text. The truncated checkpoint runs as a
real subprocess (what the process prints while torch fails to unpickle) and the unknown model
through the installed `aepose` console script; the others run the command in this process
(`run_in_process`), with the same exit code and stderr checks.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import FAST, TINY_CHECKPOINT, ZIDANE, assert_one_line_error, cli_env, run_cli, run_in_process
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

FAST_WITHOUT_MODEL = FAST[2:]  # the fast options minus --checkpoint


@pytest.fixture()
def photo(tmp_path) -> Path:
    target = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, target)
    return target


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".pose" in p.name)


def test_truncated_checkpoint(tmp_path, photo):
    broken = tmp_path / "cut.pth"
    data = TINY_CHECKPOINT.read_bytes()
    broken.write_bytes(data[: len(data) * 2 // 3])
    proc = run_cli("image", photo, "--checkpoint", broken, *FAST_WITHOUT_MODEL)
    assert_one_line_error(proc, str(broken))
    assert _outputs(tmp_path) == []


def test_foreign_checkpoint(tmp_path, photo):
    foreign = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.randn(10, 512), "fc.bias": torch.zeros(10), "epoch": torch.tensor(3)}, foreign)
    proc = run_in_process("image", photo, "--checkpoint", foreign, *FAST_WITHOUT_MODEL)
    assert_one_line_error(proc, str(foreign))
    assert _outputs(tmp_path) == []


def test_checkpoint_with_the_wrong_number_of_keypoints(tmp_path, photo):
    proc = run_in_process("image", photo, *FAST, "--keypoints", "aic")
    assert_one_line_error(proc, "17", "aic", "14")
    assert _outputs(tmp_path) == []


def test_missing_checkpoint(tmp_path, photo):
    missing = tmp_path / "nowhere" / "model.pth"
    proc = run_in_process("image", photo, "--checkpoint", missing, *FAST_WITHOUT_MODEL)
    assert_one_line_error(proc, str(missing))
    assert _outputs(tmp_path) == []


def test_unreadable_image(tmp_path):
    text = tmp_path / "photo.jpg"
    text.write_text("this is not a JPEG\n")
    proc = run_in_process("image", text, *FAST)
    assert_one_line_error(proc, str(text))
    assert _outputs(tmp_path) == []  # no empty JSON, no drawing


def test_missing_image(tmp_path):
    missing = tmp_path / "gone.jpg"
    proc = run_in_process("image", missing, *FAST)
    assert_one_line_error(proc, str(missing), "no such file")
    assert _outputs(tmp_path) == []


def test_download_of_an_unknown_model(tmp_path):
    """Through the installed `aepose` console script (the entry point a user types)."""
    script = Path(sys.executable).with_name("aepose")
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}: the package is not installed in this environment")
    proc = subprocess.run([str(script), "models", "--download", "hrnet_w99_coco"], cwd=tmp_path, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert_one_line_error(proc, "unknown model 'hrnet_w99_coco'", "hrnet_w32_coco")
    assert proc.stdout == ""
