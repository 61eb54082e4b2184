"""The output plan: every path a command will write, checked before any work is done.

A command lists its inputs (files, and folders whose images it reads) and every output it will
write (annotated images and videos, JSON, the JSON's journal, metrics), then calls `check()`
before the model loads. All paths are compared after `os.path.realpath`, so `./a.jpg`,
`a.jpg` and a symbolic link to it are one file. The plan refuses, in one line naming the option:

* an output that is one of the inputs (`--json b.jpg` with `b.jpg` an input);
* an output that another output also writes (`--out o/x.jpg --json o/x.jpg`), including two
  inputs whose annotated images would get the same name (`a/p.jpg` and `b/p.jpg` into one
  `--out DIR/`, or the same image given twice);
* an output that would land among an input folder's images, i.e. a file the folder listing
  would read as an input on the next run (`folder F --out F`, `--json F/x.jpg`);
* an output that cannot be written: a name longer than the file system allows, a parent that is
  a file, a read-only or inaccessible folder (probed by creating and removing a hidden file in
  the nearest existing folder, so it also works for root on a read-only mount).

Nothing is created by `check()` except, for the probe, a hidden file that is removed at once.
A plan that passes becomes the run's `FileScope` (`io.filesystem`): the only way the run then
creates, replaces or deletes a file, refusing every path the plan did not declare. A file where
the run would put one of its own siblings (a journal, a lock) that this tool did not write is
refused here too, rather than overwritten later.
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, OutputError
from .filesystem import FileScope, LockBusy, NotOurs, lock_path, probe_writable, real
from .output_paths import JOURNAL_MAGIC, journal_path, partial_name

__all__ = ["InputFolder", "InputPattern", "OutputPlan", "entered", "real"]


@dataclass(frozen=True)
class InputFolder:
    """A folder whose files are inputs: `would_list(path)` tells whether its listing reads a path.
    `skip`: names its listing leaves out besides hidden ones (this tool's outputs)."""

    path: Path
    extensions: tuple[str, ...]
    recursive: bool
    skip: Callable[[str], bool] | None = None
    what: str = "input images"

    @property
    def label(self) -> str:
        return f"the {self.what} of {self.path}"

    def would_list(self, resolved: str) -> bool:
        from .sources import OUTPUT_STEM_SUFFIX

        root = real(self.path)
        try:
            rel = Path(os.path.relpath(resolved, root))
        except ValueError:
            return False
        parts = rel.parts
        if not parts or parts[0] == os.pardir or rel.is_absolute():
            return False
        if not self.recursive and len(parts) != 1:
            return False
        if any(part.startswith(".") for part in parts):
            return False
        name = parts[-1]
        stem, ext = os.path.splitext(name)
        if self.skip is not None and self.skip(name):
            return False
        return ext.lower() in self.extensions and not stem.lower().endswith(OUTPUT_STEM_SUFFIX)


@dataclass(frozen=True)
class InputPattern:
    """A pattern the shell did not expand (`'clips/*.mp4'`): every file it matches is an input,
    so no output may be one it would match on the next run. `skip`: names the expansion leaves
    out (this tool's outputs)."""

    pattern: str
    recursive: bool
    skip: Callable[[str], bool] | None = None

    @property
    def label(self) -> str:
        return f"the inputs matched by '{self.pattern}'"

    def would_list(self, resolved: str) -> bool:
        pattern = real(self.pattern) if not os.path.isabs(self.pattern) else os.path.normpath(self.pattern)
        if self.skip is not None and self.skip(os.path.basename(resolved)):
            return False
        if self.recursive and "**" in pattern:
            return fnmatch.fnmatch(resolved, pattern.replace("**" + os.sep, "*").replace("**", "*"))
        pattern_parts, parts = pattern.split(os.sep), resolved.split(os.sep)
        return len(pattern_parts) == len(parts) and all(fnmatch.fnmatch(p, q) for p, q in zip(parts, pattern_parts))


@dataclass
class OutputPlan:
    """Inputs and outputs of one command run (see the module docstring)."""

    inputs: list[tuple[str, str]] = field(default_factory=list)  # (resolved path, as given)
    folders: list[InputFolder | InputPattern] = field(default_factory=list)
    outputs: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, resolved, what)
    folders_to_create: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)  # output units locked for the run
    journals: list[Path] = field(default_factory=list)
    report_folders: list[tuple[Path, tuple[str, ...]]] = field(default_factory=list)
    scope_name: str = "output plan"

    def add_input(self, path: str | os.PathLike[str]) -> None:
        self.inputs.append((real(path), os.fspath(path)))

    def add_input_folder(
        self, path: str | os.PathLike[str], extensions: tuple[str, ...], recursive: bool, skip: Callable[[str], bool] | None = None,
        what: str = "input images",
    ) -> None:
        self.folders.append(InputFolder(Path(path), tuple(e.lower() for e in extensions), recursive, skip, what))

    def add_input_pattern(self, pattern: str, recursive: bool, skip: Callable[[str], bool] | None = None) -> None:
        self.folders.append(InputPattern(pattern, recursive, skip))

    def add_output(self, path: str | os.PathLike[str] | None, what: str, *, lock: bool = False) -> None:
        """Record an output; `what` names it for the message (e.g. '--json', 'annotated image of
        a.jpg'). `lock`: the run locks it (`.NAME.aepose-lock`) before its model loads."""
        if path is not None:
            self.outputs.append((Path(path), real(path), what))
            if lock:
                self.add_lock(path)

    def add_lock(self, path: str | os.PathLike[str]) -> None:
        """Lock an output unit (a file, or the folder of a folder run's images) for the run."""
        self.locks.append(Path(path))

    def add_json(self, path: str | os.PathLike[str] | None, what: str) -> None:
        """A COCO JSON output (locked) and the journal its writer keeps beside it while it runs."""
        if path is not None:
            self.add_output(path, what, lock=True)
            self.add_output(journal_path(path), f"journal of {what}")
            self.journals.append(journal_path(path))

    def add_video(self, path: str | os.PathLike[str] | None, what: str, partial_what: str | None = None) -> None:
        """An MP4 output (locked) and the partial video a stopped run keeps beside it."""
        if path is not None:
            self.add_output(path, what, lock=True)
            self.add_output(partial_name(Path(path)), partial_what or f"partial video of {what}")

    def add_report(self, folder: str | os.PathLike[str], names: tuple[str, ...], what: str) -> None:
        """A folder written whole (`evaluate --report`): these file names inside it."""
        self.report_folders.append((Path(folder), names))
        for name in names:
            self.add_output(Path(folder) / name, what)

    def add_folder(self, path: str | os.PathLike[str]) -> None:
        """A folder the outputs go into, created by `create_folders` once `check` has passed
        (never before: a refused plan leaves nothing behind)."""
        self.folders_to_create.append(Path(path))

    def create_folders(self, scope: FileScope | None = None) -> None:
        """Create the planned folders (after `check`), through the run's scope."""
        (scope or self.scope()).make_declared_folders()

    def scope(self) -> FileScope:
        """The run's file scope: every declared output, folder and lock (sealed)."""
        scope = FileScope(self.scope_name)
        for path, resolved, what in self.outputs:
            scope.declare(path, what, resolved=resolved)
        for folder in self.folders_to_create:
            scope.declare_folder(folder)
        for folder, _names in self.report_folders:
            scope.declare_folder(folder)
        for path in self.locks:
            scope.declare_lock(path)
        return scope.seal()

    def check(self, *, probe: bool = True) -> FileScope:
        """Refuse the run: ConfigError (exit 2) when an output clashes with an input or another
        output, or a file this tool did not write sits where it keeps a journal or a lock;
        OutputError (exit 6) when one cannot be written. Returns the run's `FileScope`."""
        inputs = dict(self.inputs)
        seen: dict[str, str] = {}
        for path, resolved, what in self.outputs:
            if resolved in inputs:
                raise ConfigError(f"{path} ({what}) would overwrite the input {inputs[resolved]}; choose another output")
            if resolved in seen:
                raise ConfigError(f"{path}: {seen[resolved]} and {what} would both write this file; give them different names")
            for folder in self.folders:
                if folder.would_list(resolved):
                    raise ConfigError(
                        f"{path} ({what}) would land among {folder.label}; write outputs outside it"
                    )
            seen[resolved] = what
        for path, resolved, what in self.outputs:  # no output may be the folder of another
            parent = os.path.dirname(resolved)
            while parent != os.path.dirname(parent):
                if parent in seen:
                    raise ConfigError(f"{path} ({what}) would go into {parent}, which the {seen[parent]} writes as a file; give them different names")
                parent = os.path.dirname(parent)
        for folder, _names in self.report_folders:
            resolved_folder = real(folder)
            for given_resolved, given in self.inputs:
                if given_resolved == resolved_folder or given_resolved.startswith(resolved_folder + os.sep):
                    raise ConfigError(f"{folder}: the report folder would replace the input {given}")
            for listing in self.folders:
                if isinstance(listing, InputFolder) and real(listing.path) == resolved_folder:
                    raise ConfigError(f"{folder}: the report folder would replace the input folder {listing.path}")
        for journal in self.journals:
            if os.path.lexists(journal) and not is_journal_or_empty(journal):
                raise ConfigError(f"{journal}: exists and is not a journal of aepose; move it away or choose another output")
        for unit in self.locks:
            lock = lock_path(Path(os.path.abspath(unit)))
            if os.path.lexists(lock) and not is_lock_or_empty(lock):
                raise ConfigError(f"{lock}: exists and is not a lock file of aepose; move it away or choose another output")
        for path, _resolved, what in self.outputs:
            check_name_length(path, what)
        if probe:
            probed: set[str] = set()
            for path, resolved, what in self.outputs:
                folder = nearest_folder(Path(resolved).parent, path, what)
                if folder not in probed:
                    error = probe_writable(folder)
                    if error is not None:
                        raise OutputError(f"{path} ({what}): cannot write in {folder} ({describe_os_error(error)})") from None
                    probed.add(folder)
        return self.scope()


def is_journal_or_empty(path: str | os.PathLike[str]) -> bool:
    """An aepose journal (its first line the header `{"aepose_journal":...`, as `io.coco_json`
    writes it), or empty; never a FIFO or anything but a regular file (not opened then)."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            head = handle.read(len(JOURNAL_MAGIC))
    except OSError:
        return False
    return head in (b"", JOURNAL_MAGIC)


def is_lock_or_empty(path: str | os.PathLike[str]) -> bool:
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            head = handle.read(11)
    except OSError:
        return False
    return head in (b"", b"aepose-lock")


@contextlib.contextmanager
def entered(scope: FileScope) -> Iterator[FileScope]:
    """Enter a run's scope (take its locks: before any model loads), with its refusals as one
    line each: another run holding an output (OutputError, exit 6, naming its pid), a file this
    tool did not write where it keeps a lock (ConfigError, exit 2)."""
    try:
        scope.__enter__()
    except LockBusy as busy:
        holder = f" (pid {busy.pid})" if busy.pid else ""
        raise OutputError(
            f"{busy.path}: another aepose run{holder} is writing it; wait for it to finish or choose another output"
        ) from None
    except NotOurs as foreign:
        raise ConfigError(f"{foreign}; move it away or choose another output") from None
    except OSError as error:
        raise output_error(error) from None
    try:
        yield scope
    finally:
        scope.__exit__(None, None, None)


def check_name_length(path: Path, what: str) -> None:
    """Refuse a file name (or its temporary/journal siblings) longer than the file system allows."""
    folder = nearest_existing(Path(real(path)).parent)
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    # The longest sibling a writer makes: `.NAME.tmp-XXXXXXXX` or `NAME.partial.jsonl`
    # or `NAME.part-XXXXXXXX.mp4`.
    longest = len(os.fsencode(path.name)) + len(".part-00000000.mp4")
    if longest > limit:
        raise OutputError(
            f"{path.name[:40]}... ({what}): file name too long ({len(os.fsencode(path.name))} bytes, "
            f"at most {limit - len('.part-00000000.mp4')} here)"
        )


def nearest_existing(folder: Path) -> str:
    current = folder
    while not current.exists() and current.parent != current:
        current = current.parent
    return os.fspath(current)


def nearest_folder(folder: Path, path: Path, what: str) -> str:
    """The folder the output goes into, or the nearest one above it that exists (created later)."""
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        raise OutputError(f"{path} ({what}): {existing} is a file, not a folder")
    return existing


def describe_os_error(error: OSError) -> str:
    """A short reason for an OSError: 'read-only file system', 'no space left on device'..."""
    if error.errno == errno.ENOSPC:
        return "no space left on device"
    if error.errno in (errno.EROFS,):
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return (error.strerror or str(error)).lower()


def output_error(error: OSError, path: str | os.PathLike[str] | None = None, tail: str = "") -> OutputError:
    """An OSError met while writing an output, as one line naming the file."""
    name = path if path is not None else (error.filename or "output")
    return OutputError(f"{name}: cannot write ({describe_os_error(error)}){tail}")
