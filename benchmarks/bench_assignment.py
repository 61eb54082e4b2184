"""Time ``solve_assignment`` per matrix on tie-heavy cost matrices of the reference's form.

If ``munkres`` (1.1.4) is importable, times it on the same matrices, checks the pairs agree and
prints the speed ratio. The project does not depend on munkres, so run e.g.::

    python3 -m venv /tmp/munkres114 && /tmp/munkres114/bin/pip install munkres==1.1.4 numpy
    PYTHONPATH=. /tmp/munkres114/bin/python benchmarks/bench_assignment.py
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from aepose_cli.assignment import solve_assignment

SHAPES = [(5, 5), (10, 4), (17, 30), (30, 10), (30, 30), (30, 80)]


def mmpose_like_cost(rng: np.random.Generator, n_rows: int, n_groups: int) -> np.ndarray:
    """``round(D) * 100 - val`` from clustered 2-D tags, plus 1e10 columns when R > G."""
    means = (rng.normal(0, 1.5, (n_groups, 2))).astype(np.float32)
    tags = (means[rng.integers(0, n_groups, n_rows)] + rng.normal(0, 0.4, (n_rows, 2))).astype(np.float32)
    distance = np.linalg.norm(tags.astype(np.float64)[:, None, :] - means[None, :, :], axis=2)
    vals = np.sort(rng.uniform(0.1001, 1.2, n_rows).astype(np.float32))[::-1]
    cost = np.round(distance) * 100 - vals.astype(np.float64)[:, None]
    if n_rows > n_groups:
        pad = np.zeros((n_rows, n_rows - n_groups), dtype=np.float32) + np.float32(1e10)
        cost = np.concatenate((cost, pad), axis=1)
    return cost


def seconds_per_matrix(solve: Callable[[np.ndarray], object], costs: list[np.ndarray], repeats: int) -> float:
    """Best of ``repeats`` passes over ``costs`` (each call gets a fresh copy, as munkres mutates)."""
    best = float("inf")
    for _ in range(repeats):
        copies = [cost.copy() for cost in costs]
        start = time.perf_counter()
        for cost in copies:
            solve(cost)
        best = min(best, (time.perf_counter() - start) / len(costs))
    return best


def munkres_solver() -> Callable[[np.ndarray], object] | None:
    try:
        import munkres
    except ImportError:
        return None
    print(f"munkres {munkres.__version__} found: comparing")
    return lambda cost: munkres.Munkres().compute(cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", type=int, default=30, help="matrices per shape")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reference = munkres_solver()
    rng = np.random.default_rng(0)
    print(f"{'R x G':>8} {'aepose ms':>10} {'munkres ms':>11} {'speed-up':>9} {'same pairs':>11}")
    for n_rows, n_groups in SHAPES:
        costs = [mmpose_like_cost(rng, n_rows, n_groups) for _ in range(args.matrices)]
        ours = seconds_per_matrix(solve_assignment, costs, args.repeats)
        line = f"{n_rows:>3} x {n_groups:<4} {ours * 1e3:>10.3f}"
        if reference is not None:
            theirs = seconds_per_matrix(reference, costs, args.repeats)
            same = sum(
                np.array_equal(solve_assignment(cost), np.array(reference(cost.copy())).reshape(-1, 2))
                for cost in costs
            )
            line += f" {theirs * 1e3:>11.3f} {theirs / ours:>8.1f}x {same:>5}/{len(costs)}"
        print(line)


if __name__ == "__main__":
    main()
