"""The process owner: what a command does to its process, and the runner it hands its job.

A command owns its process; the library changes nothing process-wide unless its caller opts in.
So the command line opts in here, and only here:

* `configure_process`: the warning filters of the whole run, and SIGTERM and SIGHUP handled as
  Ctrl-C is (`install_signal_handlers`);
* `build_estimator`: torch's threads (`--threads`); malloc told to keep the network's freed
  buffers for the next pass when the network runs on this process's CPU with torch
  (`host_memory.keep_freed_memory`: 1.25-1.37x on the full-size networks); the console's bar for
  a model download;
* `build_runner`: this process around that estimator, or Ray with its core's log lines kept off
  the terminal (`filter_core_logs`).
"""
from __future__ import annotations

import signal
import threading
import warnings
from typing import TYPE_CHECKING, Any

from ..config import EngineConfig, InferenceConfig, ModelChoice
from ..errors import Stopped

if TYPE_CHECKING:
    from ..estimator import PoseEstimator
    from ..jobs.base import Runner


# The signals that stop a command as Ctrl-C does: `timeout`, `docker stop`, systemd and SLURM
# preemption send SIGTERM; a closed terminal sends SIGHUP.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def configure_process() -> None:
    """What the whole command run wants of warnings and signals."""
    # torch < 2.3 warns about its own TypedStorage use when a checkpoint loads; not the user's concern.
    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
    install_signal_handlers()


def _stop(signum: int, _frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise `Stopped` (a KeyboardInterrupt) in the main thread, so that what
    Ctrl-C does happens for them too: the frames written kept as NAME.partial.mp4, journals kept,
    temporaries and locks removed, Ray stopped, one line naming what was kept; the exit code is
    128 + the signal (143, 129). Called again after Ray starts, which sets its own SIGTERM
    handler in the driver."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, _stop)


def build_estimator(model: ModelChoice, config: InferenceConfig) -> PoseEstimator:
    """The estimator of a command, with a download bar if the model is fetched, and the
    process set up for it (`own_the_network`)."""
    from ..estimator import PoseEstimator
    from .console import DownloadBar

    if config.threads:
        import torch

        # The command owns the process (the library never changes the thread count): torch's
        # threads run the torch backend; ONNX Runtime and OpenVINO take config.threads themselves.
        torch.set_num_threads(config.threads)
    estimator = PoseEstimator(model.name, model.checkpoint, keypoints=model.keypoints, config=config, progress=DownloadBar())
    own_the_network(estimator)
    from .console import err_console

    for note in getattr(estimator.engine.backend, "notes", ()):  # the ONNX cache's: rebuilt, not writable
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    return estimator


def own_the_network(estimator: PoseEstimator) -> None:
    """The process set up for an estimator whose network runs here: on the CPU with torch,
    malloc keeps the activations' freed blocks for the next pass (`host_memory`), unless the
    user's environment says otherwise."""
    from ..host_memory import keep_freed_memory

    if estimator.engine.backend_name == "torch" and estimator.engine.device.type == "cpu":
        keep_freed_memory()


def build_runner(model: ModelChoice, config: InferenceConfig, engine: EngineConfig | None = None, estimator=None) -> Runner:
    """What runs a command's items: this process (around `estimator`, or one built now), or Ray
    (`--engine ray`, imported only then; Ray's core logs kept off the terminal).

    Enter it (`with runner:`) before any output or progress bar: Ray starts or is joined then,
    so that its failures come first, and it is stopped or left on exit."""
    if engine is not None and engine.engine == "ray":
        from ..engines.ray import RayRunner
        from .console import DownloadBar

        return _SignalsAfterStart(RayRunner(model, config, engine, progress=DownloadBar(), filter_core_logs=True))
    from ..engines.single import SingleRunner

    if estimator is None:
        estimator = build_estimator(model, config)
    else:
        own_the_network(estimator)
    return SingleRunner(estimator)


class _SignalsAfterStart:
    """A runner whose entering (Ray's start: `ray.init` sets its own SIGTERM handler in the
    driver, which would exit without the clean-up) puts this command's handlers back."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def __enter__(self) -> Any:
        self._runner.__enter__()
        install_signal_handlers()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._runner.__exit__(*exc_info)


def require_engine(engine: EngineConfig | None) -> None:
    """Fail before any work (before outputs are planned or a model loads) when the engine's
    package is missing: `--engine ray` without Ray is one line naming the extra."""
    if engine is not None and engine.engine == "ray":
        import aepose_cli.engines.ray  # noqa: F401  (EngineError when Ray is absent)
