"""The assignment solver must pick exactly munkres 1.1.4's assignment among ties.

The recorded answers come from ``tests/fixtures/record_munkres.py`` (run once with munkres
1.1.4 installed in a throwaway venv); these tests do not import munkres.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from aepose_cli import assignment
from aepose_cli.assignment import solve_assignment

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "munkres114_pairs.npz"


def _split(flat: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(sizes)[:-1])


def _mmpose_cost(rounded: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """``round(D) * 100 - val`` plus mmpose's 1e10 columns when R > G (as the recorder built it)."""
    cost = rounded.astype(np.float64) * 100 - vals.astype(np.float64)[:, None]
    n_rows, n_groups = cost.shape
    if n_rows > n_groups:
        pad = np.zeros((n_rows, n_rows - n_groups), dtype=np.float32) + np.float32(1e10)
        cost = np.concatenate((cost, pad), axis=1)
    return cost


def _recorded_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(cost matrix, munkres 1.1.4 pairs) for every recorded matrix."""
    data = np.load(FIXTURE)
    assert str(data["munkres_version"]) == "1.1.4"
    shapes = data["shapes"].astype(int)
    rounded = _split(data["rounded"], shapes.prod(axis=1))
    vals = _split(data["vals"], shapes[:, 0])
    pairs = _split(data["pairs"], data["pair_counts"])
    cases = [(_mmpose_cost(r.reshape(shape), v), p) for r, v, p, shape in zip(rounded, vals, pairs, shapes)]
    raw_shapes = data["raw_shapes"].astype(int)
    raw_costs = _split(data["raw_costs"], raw_shapes.prod(axis=1))
    raw_pairs = _split(data["raw_pairs"], data["raw_pair_counts"])
    cases += [(c.reshape(shape), p) for c, p, shape in zip(raw_costs, raw_pairs, raw_shapes)]
    return cases


@pytest.fixture(scope="module")
def recorded_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    return _recorded_cases()


def test_fixture_is_large_and_tie_heavy(recorded_cases):
    """Guard against a fixture that silently shrank or lost its big, crowded matrices."""
    assert len(recorded_cases) >= 3000
    shapes = [cost.shape for cost, _ in recorded_cases]
    assert max(cols for _, cols in shapes) >= 100
    assert sum(rows == 30 and cols >= 80 for rows, cols in shapes) >= 3
    assert sum(rows > 1 and cols > 1 for rows, cols in shapes) > 2500
    wide = [cost for cost, _ in recorded_cases if cost.shape[1] > 1]
    with_tied_row = sum(any(len(np.unique(row)) < len(row) for row in cost) for cost in wide)
    assert with_tied_row > 0.9 * len(wide)

@pytest.mark.parametrize("list_max_size", [None, 0, 10**6], ids=["auto", "numpy-only", "lists-only"])
def test_matches_munkres_114_pair_for_pair(recorded_cases, list_max_size, monkeypatch):
    """Every recorded matrix, with the automatic choice of float back-end and with each
    back-end forced, so both are checked on small and large matrices."""
    if list_max_size is not None:
        monkeypatch.setattr(assignment, "_LIST_MAX_SIZE", list_max_size)
    mismatches = []
    for index, (cost, expected) in enumerate(recorded_cases):
        got = solve_assignment(cost)
        if got.shape != expected.shape or not np.array_equal(got, expected):
            mismatches.append((index, cost.shape))
    assert mismatches == [], f"{len(mismatches)} of {len(recorded_cases)} differ, first: {mismatches[:5]}"


def _brute_force_best_total(cost: np.ndarray) -> float:
    """Smallest total cost over all ways to give min(R, G) rows distinct columns."""
    n_rows, n_cols = cost.shape
    if n_rows <= n_cols:
        orders = itertools.permutations(range(n_cols), n_rows)
        return min(sum(cost[r, c] for r, c in enumerate(cols)) for cols in orders)
    return min(sum(cost[r, c] for c, r in enumerate(rows)) for rows in itertools.permutations(range(n_rows), n_cols))


@pytest.mark.parametrize("seed", range(40))
def test_random_small_matrices_get_valid_optimal_assignment(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_cols = (int(x) for x in rng.integers(1, 7, size=2))
    cost = np.round(rng.uniform(0, 3, (n_rows, n_cols))) * 100 - rng.uniform(0.1, 1.2, (n_rows, 1))
    pairs = solve_assignment(cost)
    assert pairs.dtype.kind == "i" and pairs.shape == (min(n_rows, n_cols), 2)
    assert len(set(pairs[:, 0])) == len(pairs) and len(set(pairs[:, 1])) == len(pairs)
    assert list(pairs[:, 0]) == sorted(pairs[:, 0])
    assert pairs[:, 0].max() < n_rows and pairs[:, 1].max() < n_cols
    total = cost[pairs[:, 0], pairs[:, 1]].sum()
    assert total == pytest.approx(_brute_force_best_total(cost), abs=1e-6)


def test_mmpose_padding_columns_go_to_lowest_value_candidates():
    """Three candidates tied on distance to one group: the real column goes to the highest
    ``val`` (lowest cost); the others land on the 1e10 padding columns (new persons)."""
    cost = _mmpose_cost(np.zeros((3, 1), dtype=np.uint8), np.array([0.9, 0.8, 0.3], dtype=np.float32))
    pairs = solve_assignment(cost)
    assert pairs.tolist()[0] == [0, 0]
    assert sorted(pairs[1:, 1].tolist()) == [1, 2]


def test_input_array_is_not_modified():
    rng = np.random.default_rng(7)
    cost = _mmpose_cost(rng.integers(0, 3, (9, 4)).astype(np.uint8), np.sort(rng.uniform(0.1, 1.2, 9))[::-1])
    before = cost.copy()
    solve_assignment(cost)
    assert np.array_equal(cost, before)
    wide = np.round(rng.uniform(0, 3, (4, 11))) * 100
    before = wide.copy()
    solve_assignment(wide)
    assert np.array_equal(wide, before)


def test_empty_and_invalid_inputs():
    assert solve_assignment(np.zeros((0, 3))).shape == (0, 2)
    assert solve_assignment(np.zeros((3, 0))).shape == (0, 2)
    with pytest.raises(ValueError):
        solve_assignment(np.zeros(4))
    with pytest.raises(ValueError):
        solve_assignment(np.array([[1.0, np.nan], [0.0, 2.0]]))
