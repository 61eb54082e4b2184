"""The one face every engine shows a job: `Runner`.

A job hands a runner either a stream of items and a sink (`run`: images, frames), or a job
function and its tasks (`map`: one task per video). The single engine (`engines.single`) and the
Ray engine (`engines.ray`) implement it without importing this module; the command that builds
the runner hands it to the job. Progress is `types.Progress`, declared below both.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..types import Progress, Sink, StageTimes, WorkItem

if TYPE_CHECKING:
    from ..config import InferenceConfig
    from ..keypoints import KeypointSet

# A job function run by `Runner.map`: (a runner that holds the model in the process the task
# runs in, one task, where it may show its progress or None) -> its answer. It must be a
# module-level function of aepose: the Ray engine names it to its workers, which import it.
TaskFunction = Callable[["Runner", Any, "Progress | None"], Any]


class Runner(Protocol):
    """Where a job's work runs. Enter it (`with runner:`) before any output or progress bar:
    an engine that starts something (Ray) starts it then, so that its failures come first.

    `keypoints`: the model's keypoint set (the writers need it before any item runs);
    `config`: the inference settings it runs with; `description`: where it runs, in a few words
    for the summary line.
    """

    keypoints: KeypointSet
    config: InferenceConfig
    description: str

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def run(
        self, items: Iterable[WorkItem], sink: Sink, *, on_progress: Callable[[int], None] | None = None, keep_images: bool = True,
    ) -> StageTimes:
        """Every item through the stages into `sink`, in item order; failed items are listed in
        the times, not raised. `keep_images`: whether the sink needs the decoded image."""
        ...

    def map(self, fn: TaskFunction, tasks: Sequence[Any], *, progress: Progress | None = None) -> Iterator[tuple[int, Any]]:
        """`fn(local_runner, task, progress)` for every task, where `local_runner` runs items in
        the process the task runs in (this one, or a worker holding the model); yields (position
        in `tasks`, answer or the AeposeError that stopped that task) as each finishes. An
        engine that runs `fn` elsewhere passes None for `progress`."""
        ...
