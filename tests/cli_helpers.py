"""Shared helpers of the end-to-end CLI tests: run `aepose` and judge what it did.

Two ways to run the command, with the same result type (`subprocess.CompletedProcess`):

- `run_cli`: a real subprocess, `python -m aepose_cli`, exactly as a user runs it. It catches
  what only a fresh process shows: import-time behaviour, memory limits, signals, what the
  interpreter itself prints. Each call pays a Python + torch start-up (seconds on a shared CPU).
- `run_in_process`: `aepose_cli.cli.main.main(ARGS)` inside the test process, with what a separate
  process would give the command emulated: file-descriptor-level capture of stdout and stderr
  (so what C libraries such as OpenCV or libav print is seen, in order with Python's output), a
  fresh interpreter's warning filters (a warning is printed to stderr as it would be there), an
  uncaught exception printed as a traceback with exit code 1, the environment of `cli_env`, the
  working directory, and torch's thread count restored afterwards. Used where the process
  itself is not what a test checks; the tests that need a real process say so and use `run_cli`.

The network is slow on a shared CPU, so the tests use the tiny official-layout checkpoint and,
where the option under test does not need it, no flip test and a reduced test scale (`FAST`):
the plumbing is the same, the network input is 16x smaller.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paths import DATA, GOLDEN, REPO, SHARED, TINY_CHECKPOINT  # noqa: F401

COCO_IMAGES = DATA / "mmpose-testdata" / "coco"
ZIDANE = DATA / "ultralytics-assets" / "zidane.jpg"
BUS = DATA / "ultralytics-assets" / "bus.jpg"
MINI_VAL = DATA / "coco-mini-val2017"
MINI_VAL_ANN = MINI_VAL / "annotations" / "person_keypoints_val2017.json"

# --device cpu: the tests compare with the library on CPU, also on machines with a GPU.
MODEL = ["--checkpoint", str(TINY_CHECKPOINT), "--device", "cpu"]
# Same code paths, much less arithmetic: scale 0.25 puts a 128-pixel short side into the network.
FAST = [*MODEL, "--no-flip", "--scales", "0.25"]

DEFAULT_TIMEOUT_S = 300


def run_cli(
    *args: Any, cwd: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m aepose_cli ARGS` to completion; text output captured."""
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**cli_env(), **(env_extra or {})},
    )


# What `python -m` sets before any code runs (the interpreter's default warning filters).
_FRESH_INTERPRETER_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
)
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def run_in_process(
    *args: Any, cwd: Path | None = None, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`aepose ARGS` run by `aepose_cli.cli.main.main` in this process (see the module docstring);
    the same result as `run_cli` gives for everything but the process itself."""
    import torch

    from aepose_cli.cli.main import main

    argv = [str(a) for a in args]
    env = {**cli_env(), **(env_extra or {})}
    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(env))
        if cwd is not None:
            stack.enter_context(_working_directory(cwd))
        out_path = stack.enter_context(_captured_fd(1, "stdout"))
        err_path = stack.enter_context(_captured_fd(2, "stderr"))
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.resetwarnings()
        for action, category, module in reversed(_FRESH_INTERPRETER_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        code = 0
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc(file=sys.stderr)
            code = 1
        finally:
            for w in caught:
                sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
            torch.set_num_threads(threads)
        sys.stdout.flush()
        sys.stderr.flush()
        stdout = _SGR.sub("", out_path.read_text(encoding="utf-8", errors="backslashreplace"))
        stderr = _SGR.sub("", err_path.read_text(encoding="utf-8", errors="backslashreplace"))
    return subprocess.CompletedProcess(["aepose", *argv], code, stdout, stderr)


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _working_directory(path: Path):  # contextlib.chdir is Python 3.11+
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


@contextlib.contextmanager
def _captured_fd(fd: int, name: str):
    """Send file descriptor `fd` and `sys.<name>` to one temporary file (both appending, so their
    writes land in order); yield its path, restore both afterwards."""
    with tempfile.TemporaryDirectory(prefix="aepose-cli-") as folder:
        path = Path(folder) / name
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        saved_fd, saved_stream = os.dup(fd), getattr(sys, name)
        saved_stream.flush()
        stream = open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        try:
            os.dup2(target, fd)
            setattr(sys, name, stream)
            yield path
        finally:
            stream.flush()
            setattr(sys, name, saved_stream)
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
            os.close(target)
            stream.close()


def cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "aepose_cli", *(str(a) for a in args)]


def cli_env() -> dict[str, str]:
    """A wide, colourless terminal so rich never wraps or styles what the tests parse.

    OMP_WAIT_POLICY=PASSIVE: on a busy machine (or with the pipeline's own reader and grouping
    threads beside the network), OpenMP threads that spin while waiting for a descheduled peer
    make every convolution 10-40x slower. Passive waiting keeps the thread count, hence the
    numbers, and only stops the spinning.
    """
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args: Any, cwd: Path) -> subprocess.Popen:
    """The command as a child that a test will signal, with SIGINT at its default.

    A shell starts a background job (`pytest ... &`, what CI runners and `nohup` do) with SIGINT
    ignored, children inherit that, and Python then installs no KeyboardInterrupt handler: the
    child would never see the test's Ctrl-C and run to the end.
    """
    return subprocess.Popen(
        cli_command(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 240) -> None:
    """Return as soon as `ready()` holds while the child runs; fail if it ends first. The
    timeout is a hang guard only: a test waits for the state, never for a time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stderr.read() if proc.stderr is not None else ""
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}\n{said}")
        if ready():
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {what} within {timeout_s} s")


def freeze_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout_s: float = 240) -> None:
    """Stop the child (SIGSTOP) as soon as `ready()` holds, so a signal sent next lands on a run
    known to be unfinished; fail if it ends first. The caller sends its signal, then SIGCONT."""
    wait_until(proc, ready, what, timeout_s)
    proc.send_signal(signal.SIGSTOP)


def finish(proc: subprocess.Popen, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Wait for a started child to end (killed if it outlives the hang guard); what it said."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, stop: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Ctrl-C (or `stop`) a started child as soon as `ready()` holds, on a run frozen first so
    that it is known to be unfinished (`freeze_when`); returns what the child said."""
    try:
        freeze_when(proc, ready, what)
        proc.send_signal(stop)
        proc.send_signal(signal.SIGCONT)  # a pending SIGINT is delivered as the run resumes
    finally:
        done = finish(proc, timeout_s=120)
    return done


def run_main_after(prelude: str, *args: Any, epilogue: str = "", env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`aepose ARGS` called in a fresh interpreter after running `prelude` (to simulate an
    environment: a package that cannot be imported, a failing exporter), then `epilogue`."""
    argv = [str(a) for a in args]
    code = f"{prelude}\nfrom aepose_cli.cli.main import main\ntry:\n    main({argv!r})\nfinally:\n    {epilogue or 'pass'}"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**cli_env(), **(env_extra or {})}, timeout=300,
    )


def run_console_script(*args: Any, cwd: Path, env_extra: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`aepose ARGS` through the installed console script (the entry point a user types); skips
    the test where the package is not installed in this environment."""
    script = Path(sys.executable).with_name("aepose")
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}: the package is not installed in this environment")
    return subprocess.run(
        [str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**cli_env(), **(env_extra or {})},
    )


def describe(proc: subprocess.CompletedProcess) -> str:
    """Everything a failing assertion should show about a run."""
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert_exit_code(proc, 0)
    assert "Traceback" not in proc.stderr, describe(proc)


def _documented_exit_codes() -> dict[int, str]:
    """The README's exit-code table ("## Exit codes": `| code | meaning |` rows) as {code: meaning}."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\| (\d+) \| (.+?) \|$", section, re.MULTILINE)}


# What a user is promised: every code the tests expect must be one of these.
DOCUMENTED_EXIT_CODES = _documented_exit_codes()


def assert_exit_code(proc: subprocess.CompletedProcess, code: int) -> None:
    """The run ended with exactly `code`, a code the README documents."""
    assert code in DOCUMENTED_EXIT_CODES, f"exit {code} is not in the README's table {sorted(DOCUMENTED_EXIT_CODES)}"
    assert proc.returncode == code, f"expected exit {code} ({DOCUMENTED_EXIT_CODES[code]})\n{describe(proc)}"


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int) -> str:
    """A user error: exit `code` exactly (one of the README's), no traceback, exactly one
    `aepose: error:` line on stderr (and nothing else there), naming every fragment. Returns
    that line."""
    assert_exit_code(proc, code)
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(proc)
    line = lines[0]
    assert line.startswith("aepose: error: "), describe(proc)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_error_after_work(proc: subprocess.CompletedProcess, *fragments: str, code: int) -> str:
    """A failure met during a run: exit `code` exactly; the progress bar may have been drawn,
    but there is exactly one `aepose:` line, it is the last, it names every fragment, and there
    is no traceback. Returns that line."""
    assert_exit_code(proc, code)
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aepose:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), describe(proc)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def keypoint_array(annotation: dict) -> np.ndarray:
    """[K, 3] (x, y, score) of a dataset-style annotation (scores from `keypoint_scores`) or a
    results-style one (scores inline)."""
    flat = np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)
    if "keypoint_scores" in annotation:
        flat[:, 2] = annotation["keypoint_scores"]
    return flat


def poses_by_image(coco_json: dict) -> dict[int, list[np.ndarray]]:
    """Keypoints of every annotation of a dataset-style COCO JSON, per image id, in file order."""
    grouped: dict[int, list[np.ndarray]] = {image["id"]: [] for image in coco_json["images"]}
    for annotation in coco_json["annotations"]:
        grouped[annotation["image_id"]].append(keypoint_array(annotation))
    return grouped


def assert_same_poses(actual: list[np.ndarray], expected: list[np.ndarray], what: str) -> None:
    """Same number of people, in the same order, with the same keypoints (float32 exact)."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} people, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(
            np.asarray(got, np.float32), np.asarray(want, np.float32)[:, :3], err_msg=f"{what}, person {i}"
        )


# -- what a run leaves: inputs kept, no temporaries -----------------------------------------------
# Names of the temporaries and partial files the writers make (`.NAME.tmp-*`, `*.part-*.mp4`,
# `.partial.jsonl` journals, a video's kept `.partial.mp4`, the output plan's probe).
LEFTOVER_MARKS = (".tmp", ".part-", ".partial", ".aepose-probe")


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every regular file under `root` by relative path (FIFOs and links by their kind)."""
    digests = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.exists():
            digests[rel] = f"link->{os.readlink(path)}"
        elif path.is_fifo():
            digests[rel] = "fifo"
        elif path.is_file():
            digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def assert_inputs_kept(before: dict[str, str], root: Path) -> None:
    """Every file of `before` is still there, byte-identical (new files allowed)."""
    after = snapshot(root)
    for name, digest in before.items():
        assert after.get(name) == digest, f"input {name} was changed or removed"


def assert_untouched(root: Path, before: dict[str, str]) -> None:
    """Inputs byte-identical and nothing new under `root` (no output, no temporary file)."""
    after = snapshot(root)
    assert after == before, f"changed: {sorted(set(after.items()) ^ set(before.items()))}"


def leftovers(root: Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """Temporaries and partial files under `root` (but those whose names contain an `allowed` mark)."""
    return [
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if any(mark in p.name for mark in LEFTOVER_MARKS) and not any(a in p.name for a in allowed)
    ]


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str):
    """A tmpfs mounted at `where` (`size=96k`: a disk that fills; `ro`: read-only) for the block;
    skips the test where mounting is not permitted (it needs root)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remux_video(source: Path, out: Path, **open_options: Any) -> Path:
    """Copy `source`'s video packets, untouched, into `out` opened with `open_options` (a
    container `format`, muxer `options`); packets without a decoding time are left out."""
    import av

    with av.open(str(source)) as src, av.open(str(out), "w", **open_options) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    return out
