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
    """The run was stopped (Ctrl-C); the message says what was kept and where."""

    exit_code = 130


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
    """`--engine ray` cannot run: Ray does not start, the cluster cannot be reached or lacks the
    GPUs asked for, or it failed mid-run (the results done so far are kept for --skip-existing)."""

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
        return type(error)(f"{error}{tail}")
    except TypeError:
        return error
