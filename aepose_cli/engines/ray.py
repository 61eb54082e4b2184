"""`--engine ray`: the pipeline's stages on Ray Data, for several workers, GPUs and machines.

    driver                     Ray Data (streaming)                                       driver
    items -> batches -> rows -> decode + preprocess -> network ---------> aggregate + group -> writer
             (stages.         (CPU tasks)            (actor pool: the     (CPU tasks)          (in item order,
              consecutive)                            model loaded once                         the command's
                                                      per actor)                                own sink)

Every stage is `engines.stages`' own, as the single engine runs it; this module only decides
where each runs and how the items travel (pickled `Prepared` records, tensors as numpy arrays).

One dataset row is one network batch, made on the driver exactly as the single-process engine
makes them (consecutive items in groups of `batch_size`; an item that fails to decode keeps its
place and the others of its batch go through the network together), so the network sees the
same batches and gives the same numbers to the bit: a batched convolution rounds differently
from another batch composition (`stages.consecutive`). The driver writes the results in item
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

Jobs of a coarser grain (`aepose video --engine ray`: one task per video) run through
`RayRunner.map`: any job function on actors that hold the model (each call gets an estimator
built once per actor), the function writing its task's outputs itself; the driver gets each
answer as its task finishes. Ray's start, quiet and stop are `engines.ray_session`.

Importing this module imports Ray; nothing else in aepose does (`--engine ray` only).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..config import EngineConfig, InferenceConfig, ModelChoice, check_engine_device
from ..errors import AeposeError, EngineError
from ..types import Progress, Sink, StageTimes, WorkItem
from . import stages
from .single import SingleRunner

try:
    import ray
    import ray.data
    from ray import cloudpickle
except ImportError:
    # `--engine ray` cannot run (README: exit 7), as a backend whose package is missing is exit 5.
    raise EngineError("--engine ray needs Ray, which is not installed (pip install 'aepose-cli[ray]')") from None

from .ray_session import ray_session  # noqa: E402  (after the check above: names the missing extra)

# Retries of a decoding or grouping task whose worker process died (an actor is retried forever).
TASK_RETRIES = 4


class RayRunner:
    """`--engine ray` as the runner of a job (`jobs.base.Runner`): the model checked on the
    driver, the run on Ray.

    Construction resolves and checks the model (`estimator.resolve_model`, as the single engine
    does; a bad checkpoint fails here, before Ray starts) and gives the job the keypoint set its
    writers need. As a context manager it starts or joins the cluster on entry (so that Ray's
    failures come before any output or progress bar) and stops or leaves it on exit; `run`
    streams the items through it (entering it for the run alone when the caller has not).
    `progress`: where a model download shows. `filter_core_logs`: keep the log lines of Ray's
    C++ core off file descriptor 2 while Ray runs (`ray_session`; for a caller that owns stderr).
    """

    def __init__(
        self, model: ModelChoice, config: InferenceConfig, engine: EngineConfig, *,
        progress: Progress | None = None, filter_core_logs: bool = False,
    ) -> None:
        from ..backends import resolve_backend
        from ..estimator import resolve_model

        if engine.engine != "ray":
            raise ValueError("RayRunner runs --engine ray only")
        from ..aggregation import HeadPlan

        check_engine_device(config, engine)
        resolved = resolve_model(
            model.name, model.checkpoint, model.keypoints, progress=progress, keep_bytes=True,
            input_size=config.input_size, use_udp=config.use_udp,
        )
        self.keypoints = resolved.keypoints
        # The model's input size and UDP flag filled in, as the single engine's estimator has them.
        config = resolved.configured(config)
        self.config = config
        # What the grouping tasks need to aggregate the network's outputs without the network.
        self.plan = HeadPlan.of(resolved.net.spec, config.udp)
        self.engine = engine
        self.checkpoint_name = str(resolved.path)
        self._checkpoint = resolved.data
        # Names the cached ONNX graph of these weights (ONNX Runtime / OpenVINO backends).
        self.checkpoint_sha256 = resolved.sha256_for(resolve_backend(config.backend, engine.worker_device, config.precision))
        self._filter_core_logs = filter_core_logs
        self._session: contextlib.ExitStack | None = None
        self.started_in = 0.0  # seconds to start or join Ray

    def __enter__(self) -> RayRunner:
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            stack.enter_context(ray_session(self.engine, filter_core_logs=self._filter_core_logs))
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
        self, items: Iterable[WorkItem], sink: Sink, *, on_progress: Callable[[int], None] | None = None, keep_images: bool = True,
    ) -> StageTimes:
        """Every item through the cluster into `sink` (in item order), as the single engine does
        in one process. `keep_images`: whether the sink needs the decoded image (drawing);
        without it the pixels never travel back to the driver."""
        if self._session is None:
            with self:
                times = run_ray(items, self, sink, on_progress=on_progress, keep_images=keep_images)
            times.overhead["Ray start"] = self.started_in
            times.wall += self.started_in
            return times
        return run_ray(items, self, sink, on_progress=on_progress, keep_images=keep_images)

    def map(self, fn: Callable[[SingleRunner, Any, Progress | None], Any], tasks: Sequence[Any], *, progress: Progress | None = None) -> Iterator[tuple[int, Any]]:
        """`fn(runner, task, None)` for every task, one Ray task each, on `--workers` actors that
        hold the model (`runner`: a `SingleRunner` around the actor's estimator; `fn` must be
        importable by the workers: a module-level function of aepose; the worker writes what the
        task writes, in the command's folder). Yields
        (position in `tasks`, answer or the AeposeError that stopped that task) as each finishes;
        `progress` is not shown on the workers. Needs the runner entered (`with runner:`)."""
        if self._session is None:
            raise RuntimeError("enter the RayRunner (with runner: ...) before map")
        if not tasks:
            return
        model_ref = ray.put(self._checkpoint)
        rows = [{"seq": seq, "task": cloudpickle.dumps((os.getcwd(), fn, task))} for seq, task in enumerate(tasks)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            TaskWorker, batch_size=1, concurrency=min(self.engine.workers, len(rows)),
            fn_constructor_kwargs=self._network_kwargs(model_ref, _threads_per_worker(self)),
            **self._network_resources(),
        )
        try:
            for row in _rows_as_they_come(dataset):
                yield int(row["seq"]), pickle.loads(row["answer"])
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


def run_ray(items: Iterable[WorkItem], runner: RayRunner, sink: Sink, *, on_progress=None, keep_images: bool = True) -> StageTimes:
    start = time.perf_counter()
    times = StageTimes()
    batches = list(stages.consecutive(items, runner.config.batch_size))
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
                for item, prep in zip(batches[next_seq], pickle.loads(pending.pop(next_seq))):
                    stages.deliver(item, prep, sink, times, on_progress)
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
        # Never more actors than batches: each one is a process that loads the model.
        NetworkWorker, batch_size=1, concurrency=min(engine.workers, len(batches)),
        fn_constructor_kwargs=runner._network_kwargs(model_ref, threads), **runner._network_resources(),
    )
    dataset = dataset.map_batches(
        _group_rows, batch_size=1, fn_kwargs={"keypoints": runner.keypoints, "config": runner.config, "plan": runner.plan},
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
    """Decode and preprocess every item of each row (`stages.prepare`); failures stay in place.
    The network inputs travel on as numpy arrays; the image only when the sink draws."""
    from ..inference import prepare_image

    _at_driver_cwd(cwd)

    payloads = []
    for blob in batch["items"]:
        records = []
        for index, key, timestamp, load in cloudpickle.loads(blob):
            prep = stages.prepare(WorkItem(index, key, load, timestamp), partial(prepare_image, config=config))
            if prep.inputs is not None:
                prep.inputs = [tensor.numpy() for tensor in prep.inputs]
            if not keep_images:
                prep.image = None
            records.append(prep)
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
    network batch per call (`stages.forward`: the raw outputs at heatmap resolution go on to
    grouping)."""

    def __init__(self, *, model_ref, checkpoint_name: str, keypoints, config: InferenceConfig, threads: int, checkpoint_sha256: str | None) -> None:
        from ..inference import InferenceEngine

        net = _network(model_ref, checkpoint_name, threads)
        self.engine = InferenceEngine(net, keypoints, config, checkpoint_sha256=checkpoint_sha256)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for blob in batch["payload"]:
            records = pickle.loads(blob)
            for prep in records:
                if prep.inputs is not None:
                    prep.inputs = [_tensor(a) for a in prep.inputs]
            stages.forward(records, self.engine.forward_prepared)
            for prep in records:
                if prep.outputs is not None:
                    outs, outs_flip = prep.outputs
                    prep.outputs = (_arrays(outs), None if outs_flip is None else _arrays(outs_flip))
            payloads.append(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
        return {"seq": batch["seq"], "payload": _objects(payloads)}


class TaskWorker:
    """A task actor (`RayRunner.map`): an estimator built once from the driver's checkpoint
    bytes, then one task per call, `fn(runner, task, None)` with the function the driver named
    and the single engine around the actor's estimator (a whole video through the per-video
    pipeline, say: decoding, network, grouping, drawing, encoding, JSON, all written by this
    worker, atomically)."""

    def __init__(self, *, model_ref, checkpoint_name: str, keypoints, config: InferenceConfig, threads: int, checkpoint_sha256: str | None) -> None:
        from ..estimator import PoseEstimator

        net = _network(model_ref, checkpoint_name, threads)
        self.runner = SingleRunner(PoseEstimator.from_network(net, keypoints, config, checkpoint_sha256=checkpoint_sha256))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        answers = []
        for blob in batch["task"]:
            cwd, fn, task = cloudpickle.loads(blob)
            _at_driver_cwd(cwd)
            try:
                answer = fn(self.runner, task, None)
            except AeposeError as exc:  # reported by the driver, as the single engine reports it
                answer = exc
            answers.append(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        return {"seq": batch["seq"], "answer": _objects(answers)}


def _group_rows(batch: dict[str, np.ndarray], *, keypoints, config: InferenceConfig, plan) -> dict[str, np.ndarray]:
    """Aggregate flip and scales (`stages.aggregate`: counted as network time, as in the single
    engine; `plan`: which outputs and how, `aggregation.HeadPlan`), then group and pose-NMS
    (`stages.group`): the results the driver writes."""
    import torch

    from ..estimator import result_from_maps
    from ..inference import aggregate_network_outputs

    flip_index = torch.tensor(keypoints.flip_index, dtype=torch.long)

    def aggregated(geometry, outputs):
        outs, outs_flip = outputs
        maps, _ = aggregate_network_outputs(geometry, _tensors(outs), None if outs_flip is None else _tensors(outs_flip), flip_index, plan)
        return maps

    def grouped(maps, index, **where):
        return result_from_maps(maps, keypoints, config, index, **where)

    payloads = []
    for blob in batch["payload"]:
        records = pickle.loads(blob)
        for prep in records:
            if prep.error is None:
                stages.group(prep, stages.aggregate(prep, aggregated), grouped)
            prep.geometry = None
        payloads.append(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))
    return {"seq": batch["seq"], "payload": _objects(payloads)}


def _arrays(per_scale) -> list[tuple[np.ndarray, ...]]:
    """Per scale, the tuple of a network's outputs as numpy arrays (to travel between tasks)."""
    return [tuple(t.cpu().numpy() for t in scale) for scale in per_scale]


def _tensors(per_scale) -> list[tuple]:
    return [tuple(_tensor(a) for a in scale) for scale in per_scale]


def _tensor(array: np.ndarray):
    import torch

    # Unpickled arrays may be read-only; torch wants writable memory (a copy only then).
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _objects(values: list) -> np.ndarray:
    """A column of Python objects (bytes), never a fixed-width numpy string array."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column
