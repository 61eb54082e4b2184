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
"""
from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, OutputError
from .output_paths import journal_path, partial_name


def real(path: str | os.PathLike[str]) -> str:
    """The canonical absolute path (symbolic links, `..` and `.` resolved)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


@dataclass(frozen=True)
class InputFolder:
    """A folder whose images are inputs: `wanted(path)` tells whether its listing reads a path."""

    path: Path
    extensions: tuple[str, ...]
    recursive: bool

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
        return ext.lower() in self.extensions and not stem.lower().endswith(OUTPUT_STEM_SUFFIX)


@dataclass
class OutputPlan:
    """Inputs and outputs of one command run (see the module docstring)."""

    inputs: list[tuple[str, str]] = field(default_factory=list)  # (resolved path, as given)
    folders: list[InputFolder] = field(default_factory=list)
    outputs: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, resolved, what)
    folders_to_create: list[Path] = field(default_factory=list)

    def add_input(self, path: str | os.PathLike[str]) -> None:
        self.inputs.append((real(path), os.fspath(path)))

    def add_input_folder(self, path: str | os.PathLike[str], extensions: tuple[str, ...], recursive: bool) -> None:
        self.folders.append(InputFolder(Path(path), tuple(e.lower() for e in extensions), recursive))

    def add_output(self, path: str | os.PathLike[str] | None, what: str) -> None:
        """Record an output; `what` names it for the message (e.g. '--json', 'annotated image of a.jpg')."""
        if path is not None:
            self.outputs.append((Path(path), real(path), what))

    def add_json(self, path: str | os.PathLike[str] | None, what: str) -> None:
        """A COCO JSON output and the journal its writer keeps beside it while it runs."""
        if path is not None:
            self.add_output(path, what)
            self.add_output(journal_path(path), f"journal of {what}")

    def add_video(self, path: str | os.PathLike[str] | None, what: str, partial_what: str | None = None) -> None:
        """An MP4 output and the partial video a stopped run keeps beside it."""
        if path is not None:
            self.add_output(path, what)
            self.add_output(partial_name(Path(path)), partial_what or f"partial video of {what}")

    def add_folder(self, path: str | os.PathLike[str]) -> None:
        """A folder the outputs go into, created by `create_folders` once `check` has passed
        (never before: a refused plan leaves nothing behind)."""
        self.folders_to_create.append(Path(path))

    def create_folders(self) -> None:
        """Create the planned folders (after `check`)."""
        for folder in self.folders_to_create:
            folder.mkdir(parents=True, exist_ok=True)

    def check(self, *, probe: bool = True) -> None:
        """Refuse the run: ConfigError (exit 2) when an output clashes with an input or another
        output, OutputError (exit 6) when one cannot be written."""
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
                        f"{path} ({what}) would land among the input images of {folder.path}; write outputs outside it"
                    )
            seen[resolved] = what
        for path, _resolved, what in self.outputs:
            check_name_length(path, what)
        if probe:
            probed: set[str] = set()
            for path, resolved, what in self.outputs:
                folder = nearest_folder(Path(resolved).parent, path, what)
                if folder not in probed:
                    probe_writable(folder, path, what)
                    probed.add(folder)


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


def probe_writable(folder: str, path: Path, what: str) -> None:
    """Create and remove a hidden file in `folder`; a refusal becomes one line naming `path`."""
    probe = os.path.join(folder, f".aepose-probe-{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise OutputError(f"{path} ({what}): cannot write in {folder} ({describe_os_error(error)})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


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
