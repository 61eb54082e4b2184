"""Where the shared test data lives (`../shared` beside the repository), in one place.

Tests that need it skip with a reason when it is missing (a fresh clone without the data):
module-wide with `pytestmark = needs_shared`, or `require_shared()` at the top of a module that
reads fixtures while it is imported. The solver, tracking and zoo tests need no data.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# AEPOSE_TEST_SHARED points elsewhere (a nonexistent folder shows what runs without the data).
SHARED = Path(os.environ.get("AEPOSE_TEST_SHARED") or REPO.parent / "shared")
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"
TINY_CHECKPOINT = GOLDEN / "checkpoints" / "ae_hrnet_tiny_coco_seed0.pth"

HAVE_SHARED = GOLDEN.is_dir() and DATA.is_dir()
MISSING_REASON = f"needs the shared test data in {SHARED} (golden/ and data/)"

needs_shared = pytest.mark.skipif(not HAVE_SHARED, reason=MISSING_REASON)


def require_shared() -> None:
    """Skip the calling test module, at import time, when the shared data is missing."""
    if not HAVE_SHARED:
        pytest.skip(MISSING_REASON, allow_module_level=True)
