"""`--engine ray`: the pipeline's stages on Ray Data, for several workers, GPUs and machines.

    driver                     Ray Data (streaming)                                       driver
    items -> batches -> rows -> decode + preprocess -> network ---------> aggregate + group -> writer
             (as pipeline.    (CPU tasks)            (actor pool: the     (CPU tasks)          (in item order,
              _batches)                               model loaded once                         the command's
                                                      per actor)                                own sink)

One dataset row is one network batch, made on the driver exactly as the single-process engine
makes them (consecutive items in groups of `batch_size`; an item that fails to decode keeps its
place and the others of its batch go through the network together), so the network sees the
same batches and gives the same numbers to the bit: a batched convolution rounds differently
from another batch composition (`pipeline._batches`). The driver writes the results in item
order through the command's own sink (annotated images, the COCO JSON and its journal), so the
JSON is the single engine's, byte for byte.

The checkpoint is read once, on the driver (where it is checked before any cluster work), and
shipped to the actors through Ray's object store: worker machines need aepose installed, not
the checkpoint nor the model cache. Input images are read by the workers, so on a cluster of
several machines their paths must be on a shared file system; outputs are written by the driver.

Faults: a network actor whose process dies (SIGKILL, the OOM killer, a lost node) is restarted,
its model loaded again, and the batches it held are retried (`max_restarts`, `max_task_retries`
unlimited); a CPU task is retried `TASK_RETRIES` times. The driver is the one process that
must live: if it dies, the JSON journal written so far stays and `--skip-existing` (with either
engine) finishes the run.

Videos (`aepose video --engine ray`) are coarser: one Ray task per video, on actors that hold
the model, each running the single engine's whole per-video pipeline and writing that video's
outputs itself (`RayRunner.run_videos`).

Importing this module imports Ray; nothing else in aepose does (`--engine ray` only).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EngineConfig, InferenceConfig, check_engine_device
from ..errors import AeposeError, CheckpointError, EngineError, InputError, MissingDependencyError, UnnamedInputError
from ..types import StageTimes, WorkItem

try:
    import ray
    import ray.data
    from ray import cloudpickle
except ImportError:
    raise MissingDependencyError("--engine ray needs Ray, which is not installed (pip install 'aepose-cli[ray]')") from None

# Retries of a decoding or grouping task whose worker process died (an actor is retried forever).
TASK_RETRIES = 4
# The loggers Ray writes to the console with; quietened while a run uses Ray (the command's own
# progress bar and messages are what the user reads; Ray's logs stay in its session folder).
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
# Environment variables a local Ray's workers inherit from the driver anyway; a cluster's
# workers get them from the job's runtime environment, so that the numbers match the driver's
# (oneDNN's kernels) and waiting OpenMP threads do not spin on a shared machine.
_FORWARDED_ENV = ("ONEDNN_MAX_CPU_ISA", "OMP_WAIT_POLICY")


class RayRunner:
    """`--engine ray` for a command: the model checked on the driver, the run on Ray.

    Construction reads and checks the checkpoint (a bad one fails here, before Ray starts) and
    gives the command the keypoint set its writers need. As a context manager it starts or
    joins the cluster on entry (so that Ray's failures come before any output or progress bar)
    and stops or leaves it on exit; `run` streams the items through it (entering it for the
    run alone when the caller has not).
    """

    def __init__(self, model, config: InferenceConfig, engine: EngineConfig) -> None:
        from ..backends import resolve_backend
        from ..estimator import keypoints_of
        from ..model import build_from_checkpoint
        from ..zoo import checkpoint_sha256, resolve_checkpoint

        if engine.engine != "ray":
            raise ValueError("RayRunner runs --engine ray only")
        check_engine_device(config, engine)
        path, zoo_entry = resolve_checkpoint(model.name, model.checkpoint, progress=True)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
        net, _ = build_from_checkpoint(path, data)
        self.keypoints = keypoints_of(net, zoo_entry, model.keypoints, path)
        self.config = config
        self.engine = engine
        self.checkpoint_name = str(path)
        self._checkpoint = data
        backend = resolve_backend(config.backend, "cuda" if engine.gpus_per_worker > 0 else "cpu", config.precision)
        # Names the cached ONNX graph of these weights (ONNX Runtime / OpenVINO backends).
        self.checkpoint_sha256 = checkpoint_sha256(path) if backend != "torch" else None
        self._session: contextlib.ExitStack | None = None
        self.started_in = 0.0  # seconds to start or join Ray

    def __enter__(self) -> RayRunner:
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            stack.enter_context(_ray_session(self.engine))
            self._session = stack.pop_all()
        self.started_in = time.perf_counter() - t0
        return self

    def __exit__(self, *exc_info) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(*exc_info)

    @property
    def description(self) -> str:
        where = "a local Ray" if self.engine.ray_address is None else f"Ray at {self.engine.ray_address}"
        gpus = f", {self.engine.gpus_per_worker:g} GPU each" if self.engine.gpus_per_worker > 0 else ""
        return f"{self.config.device}, {self.engine.workers} Ray worker(s){gpus} on {where}"

    def run(
        self, items: Iterable[WorkItem], sink, *, on_progress: Callable[[int], None] | None = None, keep_images: bool = True,
    ) -> StageTimes:
        """Every item through the cluster into `sink` (in item order), as `pipeline.run_pipeline`
        does in one process. `keep_images`: whether the sink needs the decoded image (drawing);
        without it the pixels never travel back to the driver."""
        if self._session is None:
            with self:
                times = run_ray(items, self, sink, on_progress=on_progress, keep_images=keep_images)
            times.overhead["Ray start"] = self.started_in
            times.wall += self.started_in
            return times
        return run_ray(items, self, sink, on_progress=on_progress, keep_images=keep_images)

    def run_videos(self, tasks: list[tuple[Any, dict | None, bool]], draw_cfg, options) -> Iterator[tuple[int, Any]]:
        """Several videos, one Ray task each, on `--workers` actors that hold the model: each
        task runs `commands.video.process_video` (the single engine's per-video pipeline, the
        worker writing the video's outputs atomically itself). `tasks`: (VideoJob, provenance,
        resume) each. Yields (position in `tasks`, VideoOutcome or the AeposeError that stopped
        that video's run) as each finishes. Needs the runner entered (`with runner:`)."""
        if self._session is None:
            raise RuntimeError("enter the RayRunner (with runner: ...) before run_videos")
        from dataclasses import replace

        model_ref = ray.put(self._checkpoint)
        rows = [{"seq": seq, "task": cloudpickle.dumps((os.getcwd(), *task))} for seq, task in enumerate(tasks)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            VideoWorker, batch_size=1, concurrency=min(self.engine.workers, len(rows)),
            fn_constructor_kwargs={
                **self._network_kwargs(model_ref, _threads_per_worker(self)),
                "draw_cfg": draw_cfg, "options": replace(options, progress=False),
            },
            **self._network_resources(),
        )
        try:
            for row in _rows_as_they_come(dataset):
                yield int(row["seq"]), pickle.loads(row["outcome"])
        except ray.exceptions.RayError as exc:
            raise _as_aepose_error(exc) from None
        finally:
            del model_ref

    def _network_kwargs(self, model_ref, threads: int) -> dict:
        return {
            "model_ref": [model_ref],  # in a list: the actor fetches it, Ray does not inline it
            "checkpoint_name": self.checkpoint_name,
            "keypoints": self.keypoints,
            "config": self.config,
            "threads": threads,
            "checkpoint_sha256": self.checkpoint_sha256,
        }

    def _network_resources(self) -> dict:
        # A GPU worker takes one CPU slot besides its GPU; a CPU worker's cores are its
        # --threads, and it takes no slot, so decoding and grouping always find one.
        gpus = self.engine.gpus_per_worker
        return {"num_cpus": 1 if gpus > 0 else 0, "num_gpus": gpus if gpus > 0 else None, "max_restarts": -1, "max_task_retries": -1}


# ---------------------------------------------------------------------------------------------
# The driver


def run_ray(items: Iterable[WorkItem], runner: RayRunner, sink, *, on_progress=None, keep_images: bool = True) -> StageTimes:
    start = time.perf_counter()
    times = StageTimes()
    items = list(items)
    size = runner.config.batch_size
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    if not batches:
        times.wall = time.perf_counter() - start
        return times
    threads = _threads_per_worker(runner)
    # In the object store once; the driver holds it (so a restarted actor finds it again).
    model_ref = ray.put(runner._checkpoint)
    times.overhead["model to the object store"] = time.perf_counter() - start
    dataset = _dataset(batches, runner, model_ref, threads, keep_images)
    first = time.perf_counter()
    pending: dict[int, bytes] = {}
    next_seq = 0
    try:
        for row in _rows_as_they_come(dataset):
            if next_seq == 0 and not pending:
                times.overhead["until the first batch"] = time.perf_counter() - first
            pending[int(row["seq"])] = row["payload"]
            while next_seq in pending:
                _write_batch(batches[next_seq], pickle.loads(pending.pop(next_seq)), sink, times, on_progress)
                next_seq += 1
    except ray.exceptions.RayError as exc:
        raise _as_aepose_error(exc) from None
    finally:
        del model_ref
    if next_seq != len(batches):  # Ray ended the stream early: never silently short
        raise EngineError(f"Ray returned {next_seq} of {len(batches)} batches; run again with --skip-existing to finish")
    times.wall = time.perf_counter() - start
    return times


def _rows_as_they_come(dataset) -> Iterator[dict[str, Any]]:
    """The dataset's rows, each as soon as the stage that makes it has finished.

    `Dataset.iter_rows` prefetches: it hands out a block's rows only once the next block has
    arrived, so the writer and the progress bar would trail the cluster by one network batch
    (by one whole video for `run_videos`) and the last two would come together at the end.
    Whole blocks taken one at a time, without prefetching, come as they are done.
    """
    for block in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="numpy"):
        columns = list(block)
        for i in range(len(block[columns[0]]) if columns else 0):
            yield {name: block[name][i] for name in columns}


def _write_batch(batch: list[WorkItem], records: list[dict], sink, times: StageTimes, on_progress) -> None:
    """The driver's share: each result of a batch into the sink, as the single engine's writer
    thread does (failures listed, per-stage seconds summed)."""
    for item, record in zip(batch, records):
        if record["error"] is not None:
            times.failures.append((item.key, record["error"]))
        else:
            result = record["result"]
            result.timings = {**record["timings"], **result.timings}
            sink.write(item, record["image"], result)
            for stage, seconds in result.timings.items():
                times.add(stage, seconds)
        times.items += 1
        if on_progress is not None:
            on_progress(1)


def _threads_per_worker(runner: RayRunner) -> int:
    """`--threads`, else a machine's share for each of the workers it holds (Ray spreads them).

    The machine's count is the one the single engine would use there: torch's own default
    (this machine's, for a local Ray), or a cluster node's CPUs. With one worker per machine the
    network runs with exactly the single engine's threads, which matters beyond speed: oneDNN's
    convolutions round differently with another thread count (~1e-7 on heatmap scores), so only
    the same count gives the same bytes.
    """
    import math

    import torch

    if runner.config.threads:
        return runner.config.threads
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    per_node = math.ceil(runner.engine.workers / max(len(nodes), 1))
    if runner.engine.ray_address is None:
        cores = torch.get_num_threads()
    else:
        cores = int(min((n["Resources"]["CPU"] for n in nodes), default=os.cpu_count() or 1))
    return max(1, cores // per_node)


def _dataset(batches: list[list[WorkItem]], runner: RayRunner, model_ref, threads: int, keep_images: bool):
    """The Ray Data plan: one row per network batch, three stages."""
    engine = runner.engine
    rows = [
        {"seq": seq, "items": cloudpickle.dumps([(it.index, it.key, it.timestamp, it.load) for it in batch])}
        for seq, batch in enumerate(batches)
    ]
    # One block per row: each batch streams through the stages on its own, as soon as it can.
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    dataset = dataset.map_batches(
        _prepare_rows, batch_size=1, fn_kwargs={"config": runner.config, "keep_images": keep_images, "cwd": os.getcwd()},
        num_cpus=1, max_retries=TASK_RETRIES,
    )
    dataset = dataset.map_batches(
        NetworkWorker, batch_size=1, concurrency=engine.workers,
        fn_constructor_kwargs=runner._network_kwargs(model_ref, threads), **runner._network_resources(),
    )
    dataset = dataset.map_batches(
        _group_rows, batch_size=1, fn_kwargs={"keypoints": runner.keypoints, "config": runner.config},
        num_cpus=1, max_retries=TASK_RETRIES,
    )
    return dataset


def _as_aepose_error(exc: BaseException) -> AeposeError:
    """The AeposeError a worker raised (a checkpoint it could not load, say), found through
    Ray's wrappers; else an EngineError with the first line of Ray's message."""
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AeposeError):
            return current
        stack.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return EngineError(f"the Ray run failed: {type(exc).__name__}: {lines[0] if lines else ''}; the results done so far are kept, run again with --skip-existing to finish")


@contextlib.contextmanager
def _ray_session(engine: EngineConfig) -> Iterator[None]:
    """Ray for one run: a local instance started and stopped (no dashboard, quiet logs) or the
    cluster at `--ray-address` joined and left; Ray's progress bars off, its console logging
    and Python warnings held back while the run lasts (the command owns the process)."""
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
    with _without_ray_core_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        started = False
        try:
            if not ray.is_initialized():
                _init(engine)
                started = True
            _quiet_data_context()
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
    env = _worker_env(local=False)
    try:
        ray.init(address=engine.ray_address, runtime_env={"env_vars": env} if env else None, **common)
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"--ray-address {engine.ray_address}: cannot connect to a Ray cluster there ({_first_line(exc)})") from None


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
def _without_ray_core_logs() -> Iterator[None]:
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


def _quiet_data_context() -> None:
    context = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start", "enable_rich_progress_bars"):
        if hasattr(context, name):
            setattr(context, name, False)
    if hasattr(context, "execution_options"):
        context.execution_options.verbose_progress = False


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


# ---------------------------------------------------------------------------------------------
# The stages (run in Ray's worker processes)


def _at_driver_cwd(cwd: str) -> None:
    """Work in the command's folder, so that relative paths mean what they mean to the user
    (a worker process of this run only ever works for it). A machine without that folder
    keeps its own: its relative paths fail as missing files, which they are there."""
    if os.getcwd() != cwd:
        with contextlib.suppress(OSError):
            os.chdir(cwd)


def _prepare_rows(batch: dict[str, np.ndarray], *, config: InferenceConfig, keep_images: bool, cwd: str) -> dict[str, np.ndarray]:
    """Decode and preprocess every item of each row; failures stay in place, named as the
    single engine's reader names them."""
    from ..inference import prepare_image

    _at_driver_cwd(cwd)

    payloads = []
    for blob in batch["items"]:
        records = []
        for index, key, timestamp, load in cloudpickle.loads(blob):
            record: dict[str, Any] = {"index": index, "key": key, "timestamp": timestamp, "error": None, "timings": {}, "image": None}
            t0 = time.perf_counter()
            try:
                image = load()
                t1 = time.perf_counter()
                record["timings"]["decode"] = t1 - t0
                geometry, inputs = prepare_image(image, config)
                record["timings"]["preprocess"] = time.perf_counter() - t1
                record["geometry"] = geometry
                record["inputs"] = [tensor.numpy() for tensor in inputs]
                if keep_images:
                    record["image"] = image
            except (AeposeError, OSError, ValueError) as exc:
                if isinstance(exc, UnnamedInputError):
                    exc = InputError(f"{key}: {exc}")  # name the image it refused
                record["error"] = str(exc)
            records.append(record)
        payloads.append(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    return {"seq": batch["seq"], "payload": _objects(payloads)}


def _network(model_ref, checkpoint_name: str, threads: int):
    """The worker's torch threads set, and the network built from the driver's checkpoint bytes."""
    import torch

    from ..model import build_from_checkpoint

    torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))
    net, _ = build_from_checkpoint(checkpoint_name, ray.get(model_ref[0]))
    return net


class NetworkWorker:
    """The network actor: the model built once from the driver's checkpoint bytes, then one
    network batch per call (the raw outputs at heatmap resolution go on to grouping)."""

    def __init__(self, *, model_ref, checkpoint_name: str, keypoints, config: InferenceConfig, threads: int, checkpoint_sha256: str | None) -> None:
        from ..inference import InferenceEngine

        net = _network(model_ref, checkpoint_name, threads)
        self.engine = InferenceEngine(net, keypoints, config, checkpoint_sha256=checkpoint_sha256)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for blob in batch["payload"]:
            records = pickle.loads(blob)
            good = [r for r in records if r["error"] is None]
            if good:
                t0 = time.perf_counter()
                outputs = self.engine.forward_prepared([(r["geometry"], [_tensor(a) for a in r.pop("inputs")]) for r in good])
                for record, (outs, outs_flip) in zip(good, outputs):
                    record["outs"] = [o.cpu().numpy() for o in outs]
                    record["outs_flip"] = None if outs_flip is None else [o.cpu().numpy() for o in outs_flip]
                share = (time.perf_counter() - t0) / len(good)  # each image's share of its batch
                for record in good:
                    record["timings"]["network"] = share
            payloads.append(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
        return {"seq": batch["seq"], "payload": _objects(payloads)}


class VideoWorker:
    """A video actor: an estimator built once, then one whole video per call through the single
    engine's per-video pipeline (`commands.video.process_video`: decoding, network, grouping,
    tracking, drawing, encoding, JSON, all written by this worker, atomically)."""

    def __init__(
        self, *, model_ref, checkpoint_name: str, keypoints, config: InferenceConfig, threads: int,
        checkpoint_sha256: str | None, draw_cfg, options,
    ) -> None:
        from ..estimator import PoseEstimator

        net = _network(model_ref, checkpoint_name, threads)
        self.estimator = PoseEstimator.from_network(net, keypoints, config, checkpoint_sha256=checkpoint_sha256)
        self.draw_cfg = draw_cfg
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..commands.video import process_video

        outcomes = []
        for blob in batch["task"]:
            cwd, job, produced_by, resume = cloudpickle.loads(blob)
            _at_driver_cwd(cwd)
            try:
                outcome = process_video(job, self.estimator, self.draw_cfg, self.options, produced_by=produced_by, resume=resume)
            except AeposeError as exc:  # reported by the driver, as the single engine reports it
                outcome = exc
            outcomes.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
        return {"seq": batch["seq"], "outcome": _objects(outcomes)}


def _group_rows(batch: dict[str, np.ndarray], *, keypoints, config: InferenceConfig) -> dict[str, np.ndarray]:
    """Aggregate flip and scales on the base canvas (counted as network time, as in the single
    engine), then group and pose-NMS: the FrameResult the driver writes."""
    import torch

    from ..estimator import result_from_maps
    from ..inference import aggregate_outputs

    flip_index = torch.tensor(keypoints.flip_index, dtype=torch.long)
    payloads = []
    for blob in batch["payload"]:
        out = []
        for record in pickle.loads(blob):
            done: dict[str, Any] = {"error": record["error"], "timings": record["timings"], "image": record["image"], "result": None}
            if record["error"] is None:
                t0 = time.perf_counter()
                outs_flip = record["outs_flip"]
                maps, _ = aggregate_outputs(
                    record["geometry"], [_tensor(a) for a in record["outs"]],
                    None if outs_flip is None else [_tensor(a) for a in outs_flip], flip_index,
                )
                done["timings"]["network"] += time.perf_counter() - t0
                try:
                    done["result"] = result_from_maps(
                        maps, keypoints, config, record["index"], source=record["key"], timestamp=record["timestamp"]
                    )
                except AeposeError as exc:
                    done["error"] = str(exc)
            out.append(done)
        payloads.append(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return {"seq": batch["seq"], "payload": _objects(payloads)}


def _tensor(array: np.ndarray):
    import torch

    # Unpickled arrays may be read-only; torch wants writable memory (a copy only then).
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _objects(values: list) -> np.ndarray:
    """A column of Python objects (bytes), never a fixed-width numpy string array."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column
