"""Shared test fixtures: where ../shared lives and the tiny official-layout checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"
TINY_CHECKPOINT = GOLDEN / "checkpoints" / "ae_hrnet_tiny_coco_seed0.pth"


def pytest_configure(config):
    if not GOLDEN.is_dir() or not DATA.is_dir():
        raise pytest.UsageError(f"the shared fixtures are missing: expected {SHARED}")


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return TINY_CHECKPOINT
