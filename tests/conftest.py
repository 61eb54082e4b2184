"""Shared test configuration (paths to ../shared live in `paths.py`, markers in pyproject.toml).

The block at the very top pins oneDNN, PyTorch's CPU convolution library, to its AVX2 kernels
before anything can run a convolution. The golden fixtures were recorded on an AVX2-only CPU; on
a CPU with AVX-512 oneDNN would pick other kernels whose float rounding differs by ~1e-6, enough
to reorder near-equal peaks in top-k (the reference itself, re-run there, moves in the same
places). pytest loads this file before it imports any test module, and subprocess CLI tests
inherit the variable from `os.environ`. oneDNN reads it once, at its first primitive, so it only
has to be set before the first convolution, not before `import torch`.

On non-x86 machines (ARM, where oneDNN has no AVX2) the variable is ignored: there the suite
expects the golden cases to hold within their float tolerances, and only
`test_golden_any_isa.py`'s tie-tolerant comparison is guaranteed whatever the kernels.
`AEPOSE_TEST_NATIVE_ISA=1` leaves the kernels unpinned (that test's child process sets it).
"""
from __future__ import annotations

import os

if os.environ.get("AEPOSE_TEST_NATIVE_ISA") != "1":
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import subprocess  # noqa: E402
import sys  # noqa: E402

_ISA_PROBE = (
    "import torch\n"
    "torch.nn.Conv2d(8, 8, 3)(torch.zeros(2, 8, 16, 16))\n"
)


_ISA_SEEN: dict[tuple, str] = {}


def onednn_isa(env: dict | None = None) -> str:
    """The vector ISA oneDNN uses for convolutions under `env`, from its own verbose log (one
    probe process per distinct oneDNN setting of the environment)."""
    probe_env = dict(os.environ if env is None else env, ONEDNN_VERBOSE="1")
    key = tuple(sorted((k, v) for k, v in probe_env.items() if k.startswith(("ONEDNN_", "DNNL_"))))
    if key not in _ISA_SEEN:
        _ISA_SEEN[key] = _probe_isa(probe_env)
    return _ISA_SEEN[key]


def _probe_isa(probe_env: dict) -> str:
    try:
        out = subprocess.run([sys.executable, "-c", _ISA_PROBE], env=probe_env, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    for line in out.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown (no oneDNN verbose line: not an x86 oneDNN build?)"


def pytest_terminal_summary(terminalreporter):
    """Say which kernels this run used, so a failing log names its machine (also under -q)."""
    pin = os.environ.get("ONEDNN_MAX_CPU_ISA", "<unset>")
    terminalreporter.write_line(f"oneDNN ISA: {onednn_isa()} (ONEDNN_MAX_CPU_ISA={pin})")
