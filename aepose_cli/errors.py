"""One exception type per user-facing failure.

The library raises these; only the CLI turns them into a one-line message and an exit code, so
that library users can catch exactly the failure they care about.
"""
from __future__ import annotations


class AeposeError(Exception):
    """Base class: anything the user can fix (bad file, bad flag, no network)."""

    exit_code = 1


class InputError(AeposeError):
    """An input image, video or folder cannot be read or decoded."""

    exit_code = 2


class UnnamedInputError(InputError):
    """An InputError about an image given as pixels (its size, say): whoever knows the file
    name puts it in front of the message."""


class CheckpointError(AeposeError):
    """A checkpoint file is truncated, foreign, or does not fit the requested model."""

    exit_code = 3


class DownloadError(AeposeError):
    """A zoo checkpoint could not be fetched or failed its sha256 check."""

    exit_code = 4


class OutputError(AeposeError):
    """An output cannot be written (read-only or full disk, name too long, or a running run holds its journal)."""

    exit_code = 6


class Interrupted(AeposeError):
    """The run was stopped (Ctrl-C, or SIGTERM/SIGHUP, which the command line turns into a
    `Stopped`); the message says what was kept and where. `signal`: the signal's name when it
    was not Ctrl-C; the exit code is then 128 + its number (143 for SIGTERM, 129 for SIGHUP)."""

    exit_code = 130

    def __init__(self, message: str = "stopped", *, signal: str | None = None) -> None:
        super().__init__(message)
        self.signal = signal
        if signal is not None:
            self.exit_code = exit_code_of(signal)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread by the command line's handler
    (`cli/runtime.py`) so that every Ctrl-C path (partial video kept, journals kept, temporaries
    removed, Ray stopped) runs for them too. `signal_name`: 'SIGTERM' or 'SIGHUP'."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code_of(signal_name)


def exit_code_of(signal_name: str | None) -> int:
    """The shell's exit status of a command stopped by this signal: 128 + its number."""
    import signal as signals

    if signal_name is None:
        return 130
    return 128 + int(getattr(signals, signal_name, signals.SIGINT))


class ConfigError(AeposeError):
    """Options that contradict each other or the model (e.g. wrong keypoint set)."""

    exit_code = 2


class AnnotationError(AeposeError):
    """A COCO annotation or results file is unusable for evaluation."""

    exit_code = 2


class MissingDependencyError(AeposeError):
    """An optional extra needed by the requested feature is not installed."""

    exit_code = 2


class EngineError(AeposeError):
    """`--engine ray` cannot run: Ray is not installed or does not start, the cluster cannot be
    reached or lacks the GPUs asked for, or it failed mid-run (the results done so far are kept
    for --skip-existing)."""

    exit_code = 7


class BackendError(AeposeError):
    """A network backend cannot be used: its package is missing, or the model cannot be exported to it."""

    exit_code = 5


def with_context(error: AeposeError, tail: str) -> AeposeError:
    """The same failure, its message followed by `tail` (what was kept, which input it met):
    an error of the same type, so its exit code stays. An error type whose constructor takes
    other arguments is returned as it is, without the tail."""
    if not tail:
        return error
    try:
        extended = type(error)(f"{error}{tail}")
    except TypeError:
        return error
    extended.__dict__.update(error.__dict__)  # what it carries besides its message (a signal...)
    return extended
