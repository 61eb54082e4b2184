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
    """Say which kernels this run used, so a failing log names its machine (also under -q), and
    how many golden cases xfailed at proven near-ties per backend (a run with more than expected
    fails: `pytest_sessionfinish`)."""
    pin = os.environ.get("ONEDNN_MAX_CPU_ISA", "<unset>")
    terminalreporter.write_line(f"oneDNN ISA: {onednn_isa()} (ONEDNN_MAX_CPU_ISA={pin})")
    if _GOLDEN_XFAILED:
        counts = ", ".join(f"{backend} {len(nodeids)}" for backend, nodeids in sorted(_GOLDEN_XFAILED.items()))
        terminalreporter.write_line(f"golden near-tie xfails on this {machine_kind()} machine: {counts}")
    for line in _golden_xfail_excess():
        terminalreporter.write_line(f"FAILED (too many golden xfails) {line}", red=True)


# -- near-tie xfails of the golden cases: counted, and capped per backend and machine ------------
# A golden case may xfail only where `golden_ties` proves a near-tie (its reason names the
# decision and the two values); how many may do so is a property of the backend and the CPU it
# runs on, measured and written down here. More than that fails the run: a regression that
# hides behind "near-ties" shows as a count that grew. torch on the pinned kernels is exact: 0.
# "native-kernels" is test_golden_any_isa.py's run with the CPU's own oneDNN kernels.
GOLDEN_XFAIL_MODULES = ("test_golden_cases.py", "test_golden_any_isa.py")
# Measured on the project's 2-core VM (AVX-512, 2026-12-06): which cases they are and why is in
# each xfail's reason (`pytest -rx`); docs/fidelity.md describes the native-kernel ones. On a
# machine kind not measured yet the count is printed but not capped (every xfail there is still a
# proven tie): kernels of another ISA round other sums, and a guess would fail a correct run;
# measure it there and write it down.
EXPECTED_GOLDEN_XFAILS: dict[str, dict[str, int]] = {
    "torch": {},  # the pinned kernels reproduce the reference exactly: 0 on every machine
    "onnxruntime": {"avx512": 5},
    "openvino": {"avx512": 2},  # of the one image it runs (test_golden_cases.OPENVINO_CASE_IMAGES)
    "native-kernels": {"avx512": 6, "avx2": 0},  # on an AVX2 CPU the native kernels are the pinned ones
}
_GOLDEN_XFAILED: dict[str, list[str]] = {}


def machine_kind() -> str:
    """The CPU's widest vector ISA, which decides the kernels (and the rounding) of every backend."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "amx_tile" in flags:
        return "avx512-amx"  # oneDNN has other kernels there (AMX), so other roundings
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    import platform

    return platform.machine() or "unknown"


def golden_backend(nodeid: str) -> str | None:
    """The backend a golden test ran on, from its id (None: not a golden case test)."""
    path, _, name = nodeid.partition("::")
    if not path.endswith(GOLDEN_XFAIL_MODULES) or "[" not in name:
        return None
    if name.startswith("test_case_within_kernel_rounding"):
        return "native-kernels"
    return name.split("[", 1)[1].split("-", 1)[0]


def allowed_golden_xfails(backend: str, kind: str) -> int | None:
    """How many golden cases may xfail on `backend` on a `kind` machine; None: not measured there
    (counted and printed, not capped). torch on the pinned kernels: 0 everywhere."""
    if backend == "torch":
        return 0
    return EXPECTED_GOLDEN_XFAILS.get(backend, {}).get(kind)


def pytest_runtest_logreport(report):
    if getattr(report, "wasxfail", None) is not None and report.skipped:
        backend = golden_backend(report.nodeid)
        if backend is not None:
            _GOLDEN_XFAILED.setdefault(backend, []).append(report.nodeid)


def _golden_xfail_excess() -> list[str]:
    kind = machine_kind()
    return [
        f"{backend}: {len(nodeids)} golden xfail(s) on this {kind} machine, at most {allowed_golden_xfails(backend, kind)} expected: "
        + ", ".join(nodeids)
        for backend, nodeids in sorted(_GOLDEN_XFAILED.items())
        if allowed_golden_xfails(backend, kind) is not None and len(nodeids) > allowed_golden_xfails(backend, kind)
    ]


def pytest_sessionfinish(session, exitstatus):
    if _golden_xfail_excess() and exitstatus == 0:
        session.exitstatus = 1  # pytest.ExitCode.TESTS_FAILED
