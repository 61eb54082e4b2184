"""The output plan's property test (`tests/test_plan_property.py`), long and random.

    python benchmarks/soak_plan.py --examples 300 [--seed N]

CI runs that property with 30 derandomized examples (the same ones every run); this runs as many
as asked, drawn afresh each time (or from `--seed`), so that a longer soak explores other flag
combinations. Each example is one or two real `aepose` runs (image, folder, video, evaluate,
export) in a small world of paths, checked for: inputs byte-identical, every created, changed or
deleted path declared by the run's plan, no temporary or lock left, no traceback. Prints the
example count, the wall time and the pytest summary; exits non-zero when the property fails
(Hypothesis then prints the smallest failing run).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="how many examples Hypothesis draws")
    parser.add_argument("--seed", type=int, default=None, help="draw them from this seed (default: a fresh one)")
    args = parser.parse_args()
    env = {**os.environ, "AEPOSE_PLAN_EXAMPLES": str(args.examples), "AEPOSE_PLAN_RANDOM": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plan_property.py", "-k", "touches_only"]
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line or "error" in line.lower()]
    print(done.stdout[-4000:] if done.returncode else "\n".join(summary))
    print(f"soak_plan: {args.examples} examples in {wall:.0f} s ({wall / max(args.examples, 1):.1f} s each), exit {done.returncode}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
