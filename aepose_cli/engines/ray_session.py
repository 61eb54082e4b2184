"""Ray for one run: started or joined, quietened, stopped; the workers' environment.

`ray_session` is everything a Ray run does to the process around it, in one place, and undoes
it on the way out: a local Ray is started (no dashboard) and stopped, or a cluster joined and
left; Ray's loggers are set to errors only and its Python warnings held back while the run lasts
(both restored); Ray Data's progress bars and start-up banner are turned off in the current
`DataContext` and its previous settings put back. The workers get the environment the network
needs from their start (`host_memory.worker_environment`: malloc tuned for the network's buffers;
on a cluster also the driver's oneDNN and OpenMP settings).

One effect changes a file descriptor, so it is the caller's to ask for: `filter_core_logs` sends
file descriptor 2 through a filter that drops the log lines of Ray's C++ core while the session
lasts (the command line asks for it; a library caller's stderr is left alone).

Importing this module imports Ray (`--engine ray` only).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

from ..config import RAY_CONNECT_TIMEOUT_S, EngineConfig
from ..errors import EngineError

try:
    import ray
    import ray.data
except ImportError:
    raise EngineError("--engine ray needs Ray, which is not installed (pip install 'aepose-cli[ray]')") from None

# The loggers Ray writes to the console with; quietened while a run uses Ray (the command's own
# progress bar and messages are what the user reads; Ray's logs stay in its session folder).
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
# Environment variables a local Ray's workers inherit from the driver anyway; a cluster's
# workers get them from the job's runtime environment, so that the numbers match the driver's
# (oneDNN's kernels) and waiting OpenMP threads do not spin on a shared machine.
_FORWARDED_ENV = ("ONEDNN_MAX_CPU_ISA", "OMP_WAIT_POLICY")
# Ray Data's console output, turned off for the run (`DataContext` attributes, where they exist).
_DATA_CONTEXT_QUIET = ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start", "enable_rich_progress_bars")


@contextlib.contextmanager
def ray_session(engine: EngineConfig, *, filter_core_logs: bool = False) -> Iterator[None]:
    """Ray for one run: a local instance started and stopped (no dashboard, quiet logs) or the
    cluster at `--ray-address` joined and left; Ray's progress bars off, its console logging
    and Python warnings held back while the run lasts, everything restored after it.
    `filter_core_logs`: also keep the C++ core's log lines off file descriptor 2
    (`without_ray_core_logs`); for a caller that owns the process's stderr."""
    if os.environ.get("AEPOSE_RAY_VERBOSE") == "1":  # debugging: Ray as it speaks by default
        started = not ray.is_initialized()
        if started:
            _init(engine, quiet=False)
        try:
            _check_resources(engine)
            yield
        finally:
            if started:
                ray.shutdown()
        return
    loggers = {name: logging.getLogger(name) for name in _RAY_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    with contextlib.ExitStack() as stack:
        if filter_core_logs:
            stack.enter_context(without_ray_core_logs())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        started = False
        try:
            if not ray.is_initialized():
                _init(engine)
                started = True
            with _quiet_data_context():
                _check_resources(engine)
                yield
        finally:
            if started:
                with contextlib.suppress(Exception):
                    ray.shutdown()
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


def _init(engine: EngineConfig, quiet: bool = True) -> None:
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False} if quiet else {"include_dashboard": False}
    if engine.ray_address is None:
        try:
            with _inherited_by_ray(_worker_env(local=True)):
                ray.init(address="local", num_cpus=os.cpu_count() or 1, **common)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types when it cannot start
            raise EngineError(f"cannot start a local Ray instance ({_first_line(exc)})") from None
        return
    _check_reachable(engine.ray_address)
    env = _worker_env(local=False)
    try:
        ray.init(address=engine.ray_address, runtime_env={"env_vars": env} if env else None, **common)
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"--ray-address {engine.ray_address}: cannot connect to a Ray cluster there ({_first_line(exc)})") from None


def _check_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout_s`, an address where no Ray answers: `ray.init` would retry for
    minutes without a word where nothing listens (`127.0.0.1:1`, a host that is down), and
    hangs where something listens that is not Ray (a web server, a stale port forward). Ray's
    GCS and its client server speak gRPC, so the address must answer HTTP/2's connection
    preface with a SETTINGS frame within the timeout (unless Ray's TLS is on: then only the TCP
    connection is checked). 'auto' (and addresses without a port) are left to Ray, which finds a
    local cluster or says there is none."""
    import socket
    import time

    host, port = _host_port(address)
    if host is None:
        return
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            connection.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                connection.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = connection.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as error:
        reason = f"no answer within {timeout_s:g} s" if isinstance(error, TimeoutError) else (error.strerror or str(error)).lower()
        raise EngineError(f"--ray-address {address}: cannot connect to a Ray cluster there ({reason})") from None
    if len(head) < 9 or head[3] != _HTTP2_SETTINGS:
        raise EngineError(f"--ray-address {address}: cannot connect to a Ray cluster there (what answers does not speak Ray's gRPC)")


# HTTP/2's client connection preface and an empty SETTINGS frame; a gRPC server answers with a
# SETTINGS frame of its own (frame header: 3 bytes length, 1 byte type = 4, flags, stream id).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def _host_port(address: str) -> tuple[str | None, int]:
    """(host, port) of `HOST:PORT` or `ray://HOST:PORT`; (None, 0) for anything else."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None, 0
    return host.strip("[]"), int(port)


def _worker_env(local: bool) -> dict[str, str]:
    """The environment variables Ray's workers need besides their own: malloc tuned from their
    start, so that the network's buffers are reused from batch to batch on the actor's own
    thread (`host_memory`); on a cluster also the driver's oneDNN and OpenMP settings (a local
    Ray's workers inherit those)."""
    from ..host_memory import worker_environment

    env = worker_environment()
    if not local:
        env.update({name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ})
    return env


@contextlib.contextmanager
def _inherited_by_ray(env: dict[str, str]) -> Iterator[None]:
    """`env` in this process's environment while a local Ray starts, so that its processes, and
    the workers its raylet starts, inherit it; this process's own environment restored after.

    A local Ray's workers get the variables this way rather than through the job's
    `runtime_env`: a job-level runtime_env makes the raylet set up each worker's environment
    through its runtime-env agent and leaves the workers it started in advance unused: measured
    on 2 cores, 4.9-5.0 s from the plan to the first row against 2.4-3.1 s this way
    (`benchmarks/bench_scale.py`, "Ray Data alone", three runs each). Ray's own processes (GCS,
    raylet, agents) start with the variables too; for malloc's tunables that means they keep
    what they free, a small amount for them. A cluster's workers do not inherit from this
    process, so `--ray-address` keeps the runtime_env.
    """
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# A log line of Ray's C++ core: `[2026-12-02 17:10:24,406 E 15558 15558] core_worker.cc:2465: ...`.
_CORE_LOG_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")


@contextlib.contextmanager
def without_ray_core_logs() -> Iterator[None]:
    """Keep the log lines of Ray's C++ core off the console while Ray runs in this process.

    The core writes them straight to file descriptor 2 (an actor created with restarts, as every
    Ray Data actor is, logs a warning at ERROR level; no setting silences it without printing
    another line). So fd 2 becomes a pipe read by a thread that drops those lines and passes
    everything else on, and Python's `sys.stderr` writes to the real stderr directly (a terminal
    stays a terminal for the progress bar). Ray keeps its own log files in its session folder;
    AEPOSE_RAY_VERBOSE=1 shows everything. Without a real fd 2 nothing is changed.
    """
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    encoding = getattr(python_stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(
        io.FileIO(os.dup(real), "w"), encoding=encoding, errors="backslashreplace", line_buffering=True, write_through=True
    )

    def forward() -> None:
        pending = b""
        with open(read_end, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not _CORE_LOG_LINE.match(line):
                        os.write(real, line + b"\n")
        if pending and not _CORE_LOG_LINE.match(pending):
            os.write(real, pending)

    thread = threading.Thread(target=forward, name="aepose-ray-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        replacement, sys.stderr = sys.stderr, python_stderr
        os.dup2(real, 2)  # the pipe's last writer closes: the thread reads to the end and stops
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            replacement.close()
        os.close(real)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet_data_context() -> Iterator[None]:
    """Ray Data's progress bars and banners off in the current DataContext, and the settings it
    had put back afterwards (the context outlives the run in a process that keeps using Ray)."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in _DATA_CONTEXT_QUIET if hasattr(context, name)}
    options = getattr(context, "execution_options", None)
    verbose = getattr(options, "verbose_progress", None)
    for name in saved:
        setattr(context, name, False)
    if options is not None and verbose is not None:
        options.verbose_progress = False
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        if options is not None and verbose is not None:
            options.verbose_progress = verbose


def _check_resources(engine: EngineConfig) -> None:
    """Refuse, rather than wait forever, when the cluster lacks the GPUs asked for."""
    needed = engine.workers * engine.gpus_per_worker
    if needed > 0:
        have = ray.cluster_resources().get("GPU", 0)
        if have < needed:
            raise EngineError(
                f"--workers {engine.workers} --gpus-per-worker {engine.gpus_per_worker:g} need {needed:g} GPU(s); "
                f"the Ray cluster has {have:g}"
            )


