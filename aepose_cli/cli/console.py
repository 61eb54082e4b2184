"""Everything the commands print: progress bars, stage tables, the failure report, the metrics
and the model zoo tables.

rich is imported here and nowhere else in the command path, so the library (`import aepose_cli`)
never loads it. Results go to stdout only where a command promises them (tables of `models` and
`evaluate`); progress, notes and reports go to stderr, which may be shared with JSON on stdout.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from ..types import STAGES, StageTimes

err_console = Console(stderr=True)
out_console = Console()


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        # Items done over the time elapsed since the task started: rich's own `speed` divides by
        # the gap between the last two updates, so a burst of items that finish together (a
        # batch) showed "150.94 img/s" on a run doing 0.5 img/s.
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if elapsed and task.completed else None
        unit = (getattr(task, "fields", None) or {}).get("unit", self.unit)  # a task may count other things (videos)
        if not speed:
            return Text(f"-- {unit}/s", style="progress.data.speed")
        text = f"{speed:.2f} {unit}/s" if speed >= 0.1 else f"{1 / speed:.1f} s/{unit}"
        return Text(text, style="progress.data.speed")


def progress(unit: str, enabled: bool = True) -> Progress:
    """A progress bar on stderr: done/total, items per second, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not enabled,
        transient=False,
    )


class Bars:
    """The command line's `types.Progress`: one live display of bars on stderr for a command.

    The first task opened starts the display and closing it stops the display (the bar stays on
    screen, finished); tasks opened inside it (the current video's frames inside the run's
    videos) are removed when they close. `enabled=False` draws nothing.
    """

    def __init__(self, unit: str, *, enabled: bool = True) -> None:
        self._bars = progress(unit, enabled)
        self._open = 0

    @contextmanager
    def task(self, description: str, total: float | None, unit: str) -> Iterator[Callable[[float], None]]:
        outermost = self._open == 0
        if outermost:
            self._bars.start()
        task = self._bars.add_task(description, total=total, unit=unit)
        self._open += 1
        try:
            yield lambda n=1: self._bars.advance(task, n)
        finally:
            self._open -= 1
            if outermost:
                self._bars.stop()
            else:
                self._bars.remove_task(task)


class DownloadBar:
    """The command line's `types.Progress` for a model download: bytes, speed and ETA on stderr
    (stdout may carry JSON output)."""

    @contextmanager
    def task(self, description: str, total: float | None, unit: str) -> Iterator[Callable[[float], None]]:
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def report_failures(failures: Sequence[tuple[str, str]]) -> None:
    """The inputs that failed, one line each (each reason already names its file)."""
    if not failures:
        return
    err_console.print(f"[bold red]{len(failures)} input(s) failed:[/]")
    for _key, reason in failures:
        click.echo(f"  {reason}", err=True)


def stage_table(times: StageTimes, unit: str) -> Table:
    """Mean milliseconds per item of every stage that ran, and of the wall clock."""
    n = max(times.items, 1)
    stages = [s for s in STAGES if s in times.totals]
    table = Table(title=f"per-{unit} stage times (ms, mean over {n})")
    for stage in stages:
        table.add_column(stage, justify="right")
    table.add_column("wall", justify="right")
    table.add_row(*[f"{1000 * times.totals[s] / n:.1f}" for s in stages], f"{1000 * times.wall / n:.1f}")
    return table


def metrics_table(metrics: Mapping[str, float], title: str = "COCO keypoint evaluation") -> Table:
    """The metrics as a two-column rich table, in their order (COCO's ten, CrowdPose's nine);
    -1 (no GT in that range) shows as n/a."""
    table = Table(title=title)
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, "n/a" if value == -1 else f"{value:.3f}")
    return table


def models_table(cache: Path | None = None, *, urls: bool = False, family: str | None = None) -> Table:
    """The zoo as a rich table, grouped by family: keypoints, input size, published AP single and
    multi-scale, whether it is cached; `family` keeps one family (`model.FAMILIES`' keys).

    Narrow enough for an 80-column terminal; `urls` adds the download URL and the cache path.
    """
    from rich import box

    from ..config import FAMILIES
    from ..zoo import checkpoint_path, download_url, zoo_models

    models = [m for m in zoo_models().values() if family is None or m.family == family]
    table = Table(title="aepose model zoo (AP: published val, flip test; ms: scales 2,1,0.5)", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("keypoints", no_wrap=True)
    table.add_column("input", justify="right", no_wrap=True)
    table.add_column("UDP", no_wrap=True)
    table.add_column("AP", justify="right", no_wrap=True)
    table.add_column("AP ms", justify="right", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    if urls:
        table.add_column("cache path", overflow="fold")
        table.add_column("URL", overflow="fold")
    for key, label in FAMILIES.items():
        members = [m for m in models if m.family == key]
        if not members:
            continue
        table.add_row(Text(label + ":", style="italic"), end_section=False)
        for i, model in enumerate(members):
            path = checkpoint_path(model, cache)
            row = [
                model.name,
                f"{model.keypoints.label} {model.keypoints.num_joints}",
                str(model.input_size),
                "yes" if model.use_udp else "",
                f"{model.ap_single:.3f}",
                "-" if model.ap_multi is None else f"{model.ap_multi:.3f}",
                "yes" if path.is_file() else "no",
            ]
            if urls:
                row += [str(path), download_url(model)]
            table.add_row(*row, end_section=i == len(members) - 1)
    return table
