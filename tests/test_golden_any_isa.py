"""The golden cases with whatever convolution kernels this CPU picks (no ISA pin).

The rest of the suite pins oneDNN to AVX2 (see conftest.py) because that is what the fixtures
were recorded with; different kernels round differently by ~1e-6, which can reorder top-k
candidates whose values are equal to that precision. This module states what must hold on any
hardware, so a real regression fails everywhere and a kernel change never does:

- the top-k values of every joint equal the reference's within 1e-5 (sorted, so reorderings
  cannot hide a change of value);
- the top-k locations equal the reference's, except that candidates whose reference values are
  within 1e-5 of each other (a chain of near-ties) may come in another order;
- once such near-ties are put back in the reference's order, matching, adjust, scoring and refine
  give the same people in the same order, keypoints within 1e-3 px, scores within 1e-5.

`test_golden_holds_with_native_kernels` runs the per-case checks in a child pytest whose
environment has no `ONEDNN_MAX_CPU_ISA`; in the pinned parent they are skipped. Where this CPU's
own kernels are the pinned ones (oneDNN reports the same ISA with and without the pin, as on an
AVX2-only CPU), a child would compute exactly what this process computes: then the per-case
checks run here instead, on the network outputs `test_golden_cases.py` computes anyway (one
cache), and the child is not started.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_golden_cases import CASE_FILES, _config, _maps

from aepose_cli.grouping import Candidates, group, poses_from, top_k
from aepose_cli.keypoints import COCO

from conftest import onednn_isa

TIE = 1e-5
NATIVE = os.environ.get("AEPOSE_TEST_NATIVE_ISA") == "1"


def _native_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env["AEPOSE_TEST_NATIVE_ISA"] = "1"
    return env


@functools.cache
def native_kernels_are_pinned_ones() -> tuple[bool, str, str]:
    """(same, native ISA, pinned ISA): whether oneDNN picks the same ISA without the pin."""
    native, pinned = onednn_isa(_native_env()), onednn_isa()
    return native == pinned and not native.startswith("unknown"), native, pinned


def tie_groups(values: np.ndarray) -> list[range]:
    """Maximal runs of a descending sequence whose neighbours differ by at most `TIE`."""
    groups, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i - 1] - values[i] > TIE:
            groups.append(range(start, i))
            start = i
    return groups


def reorder_like_reference(cands: Candidates, ref_val: np.ndarray, ref_loc: np.ndarray) -> tuple[Candidates, list[str]]:
    """Our candidates with near-tied runs put in the reference's order; problems as text.

    A run that reaches the end of the top-k list may hold different members (the k-th place
    among equal values is arbitrary); those keep our order.
    """
    problems: list[str] = []
    order = np.tile(np.arange(cands.val.shape[1]), (cands.val.shape[0], 1))
    for joint in range(cands.val.shape[0]):
        for run in tie_groups(ref_val[joint]):
            ours = [tuple(xy) for xy in cands.loc[joint, run.start:run.stop]]
            theirs = [tuple(xy) for xy in ref_loc[joint, run.start:run.stop]]
            if ours == theirs:
                continue
            truncated = run.stop == ref_val.shape[1]
            if sorted(ours) != sorted(theirs):
                if not truncated:
                    problems.append(f"joint {joint}, places {run.start}..{run.stop - 1}: locations {ours} vs reference {theirs}")
                continue
            order[joint, run.start:run.stop] = [run.start + ours.index(xy) for xy in theirs]
    rows = np.arange(cands.val.shape[0])[:, None]
    return Candidates(cands.val[rows, order], cands.loc[rows, order], cands.tag[rows, order]), problems


@pytest.mark.slow
@pytest.mark.parametrize("case_file", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case_within_kernel_rounding(case_file):
    if not NATIVE:
        same, native, pinned = native_kernels_are_pinned_ones()
        if not same:
            pytest.skip(f"runs in the unpinned child process of test_golden_holds_with_native_kernels ({native}, not {pinned})")
    case = json.loads(case_file.read_text())
    config = _config(case)
    maps = _maps("torch", case["image"], config.scales, config.flip)
    ref_val = np.array(case["topk_val"], dtype=np.float32)
    ref_loc = np.array(case["topk_loc"])

    cands = top_k(maps.heatmaps, maps.tags, config.max_people)
    np.testing.assert_allclose(cands.val, ref_val, rtol=0, atol=TIE)
    cands, problems = reorder_like_reference(cands, ref_val, ref_loc)
    assert not problems, "top-k differs beyond near-tie reordering:\n" + "\n".join(problems)

    poses = poses_from(group(maps, COCO, config, candidates=cands), maps.geometry)

    people = case["people"]
    assert len(poses) == len(people)
    for got, want in zip(poses, people):
        want_kpts = np.array(want["keypoints"])
        np.testing.assert_allclose(got.keypoints[:, :2], want_kpts[:, :2], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got.keypoints[:, 2], want_kpts[:, 2], rtol=0, atol=TIE)
        assert abs(got.score - want["score"]) <= TIE


def test_tie_groups_chain_near_equal_values():
    values = np.array([0.9, 0.5, 0.5 - 4e-6, 0.5 - 8e-6, 0.3, 0.1, 0.1], dtype=np.float32)
    assert tie_groups(values) == [range(0, 1), range(1, 4), range(4, 5), range(5, 7)]


def test_reordering_is_undone_only_within_near_ties():
    ref_val = np.array([[0.9, 0.5, 0.5, 0.2]], dtype=np.float32)
    ref_loc = np.array([[[1, 1], [2, 2], [3, 3], [4, 4]]])
    tags = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    swapped = Candidates(ref_val.copy(), ref_loc[:, [0, 2, 1, 3]].copy(), tags.copy())
    fixed, problems = reorder_like_reference(swapped, ref_val, ref_loc)
    assert problems == []
    np.testing.assert_array_equal(fixed.loc, ref_loc)
    np.testing.assert_array_equal(fixed.tag[0, :, 0], [0, 2, 1, 3])  # tags travel with their peaks

    # A swap across values 0.4 apart is a real difference, not a tie.
    wrong = Candidates(ref_val.copy(), ref_loc[:, [1, 0, 2, 3]].copy(), tags.copy())
    assert reorder_like_reference(wrong, ref_val, ref_loc)[1]


@pytest.mark.slow
@pytest.mark.skipif(NATIVE, reason="this is the parent; the child runs the per-case checks")
def test_golden_holds_with_native_kernels():
    same, isa, _pinned = native_kernels_are_pinned_ones()
    if same:
        pytest.skip(f"this CPU's own kernels are the pinned ones ({isa}): test_case_within_kernel_rounding ran every case here")
    env = _native_env()
    here = Path(__file__).resolve()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{here}::test_case_within_kernel_rounding"],
        cwd=here.parents[1], env=env, capture_output=True, text=True, timeout=1800,
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"with native kernels ({isa}):\n{tail}"
    assert f"{len(CASE_FILES)} passed" in proc.stdout, tail
