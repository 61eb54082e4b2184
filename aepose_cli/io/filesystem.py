"""The one way aepose changes the file system: a `FileScope` per run, owned by its output plan.

Why one module: "no flag combination may change or delete a file the run did not write" cannot be
kept as a list of handled cases, so it is kept as a property of the code. Every create, replace,
rename, truncate, folder creation and delete that aepose makes is a method of `FileScope` (a test
scans the package's source and fails on any such call elsewhere: `tests/test_fs_scan.py`), and a
scope:

* knows, before any work starts, every path it may write: the files the output plan declared
  (`declare`), the folders it may create (`declare_folder`, and the missing parents of declared
  files), and the lock files it takes (`declare_lock`); it is sealed after the plan's check, and
  any operation on another path raises `PlanViolation` (a bug in aepose, never silent);
* makes every finished file appear by one rename, from a temporary beside it whose name carries
  a random token recorded in memory when it is created (`.NAME.tmp-1a2b3c4d`,
  `NAME.part-1a2b3c4d.mp4`); a temporary is deleted only by its recorded token, never because
  its name matches a pattern;
* deletes a file only when it can prove it wrote it: it created or rewrote it in this run, or the
  file carries this tool's own marker (a journal's header, a report's marker file, an MP4's
  `comment` tag), checked by the caller's `proof` just before the delete, or it is the temporary
  of a stopped run whose token that run recorded in its journal (`remove_recorded_temporary`);
* takes its run's locks (one per output unit: `.NAME.aepose-lock` beside it, `flock`ed, holding the
  pid) when it is entered, before any model loads, and releases them, with the lock files, when it
  is left; a second run on the same outputs is refused naming the first one's pid (`LockBusy`).

A library caller that builds a writer without a scope gets one declaring that writer's own files
(`FileScope.of`), so the rules hold for the Python API too. The model and ONNX caches under
`$AEPOSE_HOME` go through their own scopes (`zoo.py`, `backends/onnx_export.py`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

# The temporaries a scope makes: `.{name}.tmp-{token}` for atomic files and folders (hidden, so
# no folder listing reads them), and the patterns a writer asks for (the encoder's
# `{name}.part-{token}.mp4`). A token is 8 lowercase hex digits.
TEMP_PATTERN = ".{name}.tmp-{token}"
LOCK_SUFFIX = ".aepose-lock"
_TOKEN = re.compile(r"[0-9a-f]{8}")
_LOCK_MAGIC = b"aepose-lock"


class PlanViolation(RuntimeError):
    """A create, replace or delete of a path the run's plan did not declare (or a delete of a file
    it cannot prove it wrote). Always a bug in aepose: the plan is checked before work starts, so
    a user's flags never reach this."""


class NotOurs(Exception):
    """A file where the run would put one of its own (a lock, a journal) that this tool did not
    write: the run is refused rather than overwrite it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


class LockBusy(Exception):
    """Another process holds the lock of an output (`pid` when it could be read, else None)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(str(path))
        self.path = path
        self.pid = pid


def real(path: str | os.PathLike[str]) -> str:
    """The canonical absolute path (symbolic links, `..` and `.` resolved)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def new_token() -> str:
    """A fresh random token for a temporary's name."""
    return secrets.token_hex(4)


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output unit: `.NAME.aepose-lock` beside it (hidden)."""
    output = Path(output)
    return output.with_name(f".{output.name}{LOCK_SUFFIX}")


class FileScope:
    """Every path one run may write, and the only methods that write (see the module docstring).

    `name` says whose scope it is in a PlanViolation ("output plan", "ONNX cache"...).
    """

    def __init__(self, name: str = "output plan") -> None:
        self.name = name
        self._files: dict[str, str] = {}  # resolved path -> what it is (for messages)
        self._folders: set[str] = set()  # folders it may create, resolved
        self._explicit_folders: set[str] = set()  # of those, the folders of outputs (`--out DIR/`)
        self._lock_units: dict[str, Path] = {}  # resolved lock file -> the output it guards
        self._sealed = False
        self._init_runtime()

    def _init_runtime(self) -> None:
        # What this process did with the scope; never pickled (a Ray worker gets its own).
        self._temps: dict[str, str] = {}  # temporary (resolved) -> the target it stands for
        self._aside: dict[str, str] = {}  # a replaced folder renamed aside -> its old name
        self._written: set[str] = set()  # files created or wholly rewritten by this scope
        self._created_folders: list[str] = []
        self._held: dict[str, int] = {}  # lock file -> its fd, while entered
        self._depth = 0

    def __getstate__(self) -> dict[str, Any]:
        # A copy (sent to a Ray worker) declares the same files but takes no locks: the run's
        # locks are its driver's.
        return {
            "name": self.name, "_files": self._files, "_folders": self._folders,
            "_explicit_folders": self._explicit_folders, "_sealed": self._sealed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock_units = {}
        self._init_runtime()

    # -- declaring ------------------------------------------------------------------------------

    @classmethod
    def of(cls, *paths: str | os.PathLike[str] | None, name: str = "writer") -> FileScope:
        """A sealed scope declaring just these files (a writer built without a run's scope)."""
        scope = cls(name)
        for path in paths:
            if path is not None:
                scope.declare(path, "output")
        return scope.seal()

    def _check_open(self) -> None:
        if self._sealed:
            raise PlanViolation(f"{self.name}: declared after the plan was checked")

    def declare(self, path: str | os.PathLike[str], what: str, *, resolved: str | None = None) -> None:
        """A file the run may create or replace; the missing folders above it may be created.
        `resolved`: `real(path)`, when the caller has it already."""
        self._check_open()
        resolved = resolved or real(path)
        self._files.setdefault(resolved, what)
        self._declare_parents(resolved)

    def declare_folder(self, path: str | os.PathLike[str]) -> None:
        """A folder the run may create (and its missing parents)."""
        self._check_open()
        resolved = real(path)
        self._folders.add(resolved)
        self._explicit_folders.add(resolved)
        self._declare_parents(resolved)

    def declare_lock(self, output: str | os.PathLike[str]) -> None:
        """Lock this output unit (a file, or a folder of outputs) for the run: `.NAME.aepose-lock`
        beside it, taken when the scope is entered."""
        self._check_open()
        path = lock_path(Path(os.path.abspath(output)))
        resolved = real(path)
        self._lock_units[resolved] = Path(output)
        self._declare_parents(resolved)

    def _declare_parents(self, resolved: str) -> None:
        parent = os.path.dirname(resolved)
        while parent and parent not in self._folders and not os.path.isdir(parent):
            self._folders.add(parent)
            parent, previous = os.path.dirname(parent), parent
            if parent == previous:
                break

    def seal(self) -> FileScope:
        """No more declarations: the plan has been checked. Returns the scope."""
        self._sealed = True
        return self

    def subset(self, paths: Iterable[str | os.PathLike[str] | None], name: str | None = None) -> FileScope:
        """A sealed scope with only some of this scope's files (one video's, for its task)."""
        part = FileScope(name or self.name)
        for path in paths:
            if path is None:
                continue
            resolved = real(path)
            if resolved not in self._files:
                raise PlanViolation(f"{self.name}: {path} is not among its files")
            part._files[resolved] = self._files[resolved]
            part._declare_parents(resolved)
        return part.seal()

    def declares(self, path: str | os.PathLike[str]) -> bool:
        return real(path) in self._files

    def declared_paths(self) -> frozenset[str]:
        """Every path the run may leave created or changed: its files, the folders it may create,
        its lock files (resolved). What the property test diffs the file tree against."""
        return frozenset(self._files) | frozenset(self._folders) | frozenset(self._lock_units)

    # -- entering: the run's locks ----------------------------------------------------------------

    def __enter__(self) -> FileScope:
        if self._depth == 0:
            try:
                for resolved in sorted(self._lock_units):
                    self._held[resolved] = self._take_lock(resolved)
            except BaseException:
                self._release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._release()

    def _take_lock(self, resolved: str) -> int:
        path = Path(resolved)
        self.make_folders(path.parent)
        existed = os.path.lexists(resolved)
        if existed and not _is_lock_file(resolved):
            raise NotOurs(Path(resolved), "is not a lock file of aepose")
        fd = open_locked(resolved, on_busy=lambda: LockBusy(self._lock_units[resolved], _lock_holder(resolved)))
        if not existed:
            self._written.add(resolved)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _LOCK_MAGIC + f" pid {os.getpid()}\n".encode(), 0)
        return fd

    def _release(self) -> None:
        for resolved, fd in sorted(self._held.items()):
            # Unlinked while still locked: a run that opens the name meanwhile finds another
            # file than the one it locked and tries again (`open_locked`).
            with contextlib.suppress(OSError):
                if _is_lock_file(resolved):
                    os.unlink(resolved)
            os.close(fd)
        self._held.clear()
        for temp in list(self._temps):
            self._discard_quietly(temp)
        for folder in reversed(self._created_folders):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty: a folder this run made and left unused
        self._created_folders.clear()

    # -- checks -------------------------------------------------------------------------------

    def _file(self, path: str | os.PathLike[str], action: str) -> str:
        resolved = real(path)
        if resolved not in self._files:
            raise PlanViolation(f"{self.name}: {action} {path}, which the plan did not declare")
        return resolved

    def _temp(self, path: str | os.PathLike[str], action: str) -> str:
        resolved = real(path)
        if resolved not in self._temps:
            raise PlanViolation(f"{self.name}: {action} {path}, which is not a temporary it made")
        return resolved

    # -- folders ------------------------------------------------------------------------------

    def make_folders(self, folder: str | os.PathLike[str]) -> None:
        """Create `folder` and its missing parents: each one declared (a folder of the plan, or
        above a declared file)."""
        missing: list[str] = []
        current = real(folder)
        while not os.path.isdir(current):
            if os.path.lexists(current):
                raise FileExistsError(errno.EEXIST, "not a folder", current)
            if current not in self._folders:
                raise PlanViolation(f"{self.name}: create the folder {current}, which the plan did not declare")
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
                continue
            self._created_folders.append(path)

    def make_declared_folders(self) -> None:
        """Create the folders the plan declared as folders of outputs (`--out DIR/`)."""
        for folder in sorted(self._explicit_folders):
            self.make_folders(folder)

    # -- temporaries and atomic files -----------------------------------------------------------

    def _new_temp(self, target: str, pattern: str, token: str | None, reuse: bool) -> tuple[str, int]:
        folder, name = os.path.split(target)
        while True:
            chosen = token or new_token()
            if _TOKEN.fullmatch(chosen) is None:
                raise ValueError(f"a temporary's token is 8 lowercase hex digits, not {chosen!r}")
            temp = os.path.join(folder, pattern.format(name=name, token=chosen))
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if reuse else os.O_EXCL) | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(temp, flags, 0o666)
            except FileExistsError:
                if token is not None:
                    raise
                continue
            self._temps[real(temp)] = target
            return temp, fd

    @contextlib.contextmanager
    def atomic_file(self, target: str | os.PathLike[str], mode: str = "wb", *, mtime_ns: int | None = None) -> Iterator[IO[Any]]:
        """Write `target` through a hidden temporary beside it (`.NAME.tmp-TOKEN`), fsync'ed and
        renamed onto it on success; removed (by its recorded token) if the body raises. After a
        crash `target` holds its old content or the whole new one. `mode`: 'wb' or 'w' (UTF-8).
        `mtime_ns`: the modification time the file gets (the zoo's sidecars)."""
        if mode not in ("wb", "w"):
            raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
        resolved = self._file(target, "write")
        self.make_folders(os.path.dirname(resolved))
        temp, fd = self._new_temp(resolved, TEMP_PATTERN, None, False)
        try:
            with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns))
            self.commit(temp, resolved)
        except BaseException:
            self._discard_quietly(real(temp))
            raise

    def store_bytes(self, target: str | os.PathLike[str], data: bytes) -> None:
        """Replace `target` with `data` in one step (`atomic_file`)."""
        with self.atomic_file(target, "wb") as handle:
            handle.write(data)

    def store_text(self, target: str | os.PathLike[str], text: str) -> None:
        """Replace `target` with UTF-8 `text` in one step (`atomic_file`)."""
        with self.atomic_file(target, "w") as handle:
            handle.write(text)

    def open_temporary(
        self, target: str | os.PathLike[str], pattern: str, *, token: str | None = None, reuse: bool = False
    ) -> tuple[Path, IO[bytes]]:
        """A new temporary for `target` named by `pattern` (`{name}` and `{token}`), open for
        reading and writing as a binary file object; `commit` or `discard` it. `token`: the
        run's own token (a retried task reuses its dead attempt's file when `reuse`)."""
        resolved = self._file(target, "write")
        self.make_folders(os.path.dirname(resolved))
        temp, fd = self._new_temp(resolved, pattern, token, reuse)
        return Path(temp), os.fdopen(fd, "w+b")

    def commit(self, temp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        """Rename a temporary of this scope onto a declared file (one step) and persist it."""
        source = self._temp(temp, "rename")
        resolved = self._file(target, "replace")
        os.replace(source, resolved)
        del self._temps[source]
        self._written.add(resolved)
        fsync_folder(os.path.dirname(resolved))

    def holds_temporary(self, temp: str | os.PathLike[str]) -> bool:
        """Whether `temp` is a temporary of this scope not yet committed or discarded."""
        return real(temp) in self._temps

    def discard(self, temp: str | os.PathLike[str]) -> None:
        """Delete a temporary of this scope (its token was recorded when it was made)."""
        self._discard_quietly(self._temp(temp, "delete"))

    def _discard_quietly(self, resolved: str) -> None:
        if resolved not in self._temps:
            return
        del self._temps[resolved]
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(resolved) and not os.path.islink(resolved):
                _remove_own_tree(resolved)
            else:
                os.unlink(resolved)

    # -- folders written whole (the report) -------------------------------------------------------

    def temporary_folder(self, target: str | os.PathLike[str]) -> Path:
        """A new hidden folder beside a declared folder `target` (`.NAME.tmp-TOKEN`), to fill with
        `write_into` and swap in with `swap_folder`."""
        resolved = real(target)
        if resolved not in self._folders:
            raise PlanViolation(f"{self.name}: write the folder {target}, which the plan did not declare")
        self.make_folders(os.path.dirname(resolved))
        folder, name = os.path.split(resolved)
        while True:
            temp = os.path.join(folder, TEMP_PATTERN.format(name=name, token=new_token()))
            try:
                os.mkdir(temp)
            except FileExistsError:
                continue
            self._temps[temp] = resolved
            return Path(temp)

    def write_into(self, temp_folder: str | os.PathLike[str], name: str, data: bytes) -> None:
        """A new file `name` (a plain name) inside a temporary folder of this scope, fsync'ed."""
        folder = self._temp(temp_folder, "write into")
        if os.sep in name or name in (os.curdir, os.pardir) or (os.altsep and os.altsep in name):
            raise PlanViolation(f"{self.name}: {name!r} is not a plain file name")
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def swap_folder(self, temp_folder: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path | None:
        """Put a filled temporary folder in place of `target` in one rename. An existing `target`
        is first renamed aside (`.NAME.old-TOKEN`, recorded) and returned, for the caller to
        empty of the files it proves are its own (`remove_listed`). Returns None when there was
        no `target`."""
        source = self._temp(temp_folder, "rename")
        resolved = real(target)
        if resolved not in self._folders:
            raise PlanViolation(f"{self.name}: replace the folder {target}, which the plan did not declare")
        old = None
        if os.path.lexists(resolved):
            folder, name = os.path.split(resolved)
            old = os.path.join(folder, f".{name}.old-{new_token()}")
            os.rename(resolved, old)
            self._aside[old] = resolved
        try:
            os.rename(source, resolved)
        except BaseException:
            if old is not None:
                os.rename(old, resolved)
                del self._aside[old]
            raise
        del self._temps[source]
        fsync_folder(os.path.dirname(resolved))
        return None if old is None else Path(old)

    def remove_listed(self, old_folder: str | os.PathLike[str], names: Iterable[str]) -> bool:
        """Empty a folder this scope set aside (`swap_folder`) of the plain-named regular files
        its own marker listed, then remove it if nothing else is left. Returns whether it is
        gone (a file nobody listed stays, with the folder around it)."""
        folder = real(old_folder)
        if folder not in self._aside:
            raise PlanViolation(f"{self.name}: empty {old_folder}, which is not a folder it set aside")
        for name in names:
            if os.sep in name or name in ("", os.curdir, os.pardir):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.unlink(path)
        del self._aside[folder]  # gone, or left in place with what nobody listed
        try:
            os.rmdir(folder)
        except OSError:
            return False
        return True

    # -- files written in place (journals, JSON lines) --------------------------------------------

    def open_locked(self, path: str | os.PathLike[str], *, on_busy: Callable[[], Exception]) -> int:
        """An fd on the declared file `path` (created if absent, never truncated) holding an
        exclusive `flock`; `on_busy()` is raised when another open file holds it."""
        resolved = self._file(path, "open for writing")
        self.make_folders(os.path.dirname(resolved))
        existed = os.path.lexists(resolved)
        fd = open_locked(resolved, on_busy=on_busy)
        if not existed:
            self._written.add(resolved)
        return fd

    def truncate(self, fd: int, path: str | os.PathLike[str], length: int) -> None:
        """Cut the declared file `path` (open as `fd`) to `length` bytes."""
        resolved = self._file(path, "truncate")
        os.ftruncate(fd, length)
        if length == 0:
            self._written.add(resolved)

    def open_write(self, path: str | os.PathLike[str], mode: str) -> IO[Any]:
        """The declared file `path` opened in place: 'w' (UTF-8, from scratch), 'a' (UTF-8,
        appended), 'r+b' (bytes changed in place)."""
        if mode not in ("w", "a", "r+b"):
            raise ValueError(f"mode must be 'w', 'a' or 'r+b', got {mode!r}")
        resolved = self._file(path, "open for writing")
        self.make_folders(os.path.dirname(resolved))
        if mode == "w":
            self._written.add(resolved)
        return open(resolved, mode, **({} if "b" in mode else {"encoding": "utf-8"}))  # noqa: SIM115

    def overwrite_at(self, path: str | os.PathLike[str], offset: int, data: bytes) -> None:
        """Replace `len(data)` bytes of the declared file `path` at `offset` (a journal's pid)."""
        with self.open_write(path, "r+b") as raw:
            raw.seek(offset)
            raw.write(data)

    # -- deleting what it can prove it wrote ------------------------------------------------------

    def remove(self, path: str | os.PathLike[str], *, proof: Callable[[str], bool] | None = None) -> bool:
        """Delete the declared file `path` when this scope created or rewrote it in this run, or
        when `proof(path)` finds this tool's own marker in it (read just before). Returns whether
        it was deleted; a file without proof is left as it is. Missing: False."""
        resolved = self._file(path, "delete")
        if not os.path.lexists(resolved):
            return False
        if not stat.S_ISREG(os.lstat(resolved).st_mode):
            return False
        if resolved not in self._written and (proof is None or not proof(resolved)):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(resolved)
        self._written.discard(resolved)
        return True

    def remove_recorded_temporary(self, target: str | os.PathLike[str], pattern: str, token: str) -> bool:
        """Delete the temporary a stopped run made for the declared `target` and recorded (its
        token, in its journal): the name is rebuilt from `pattern` and the token, never matched.
        Returns whether a file was deleted."""
        if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
            return False
        resolved = self._file(target, "clean up after")
        folder, name = os.path.split(resolved)
        temp = os.path.join(folder, pattern.format(name=name, token=token))
        try:
            if not stat.S_ISREG(os.lstat(temp).st_mode):
                return False
        except FileNotFoundError:
            return False
        os.unlink(temp)
        return True


# ---------------------------------------------------------------------------------------------
# Helpers that create nothing a scope has not declared


def _remove_own_tree(folder: str) -> None:
    """Delete a temporary folder this scope made and filled (plain files only, one level)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    os.rmdir(folder)


def open_locked(path: str, *, on_busy: Callable[[], Exception]) -> int:
    """An fd on `path` (created if absent, never truncated) holding an exclusive `flock`
    (without `fcntl`, on Windows, the fd comes without a lock). Raises `on_busy()` when another
    open file holds the lock. A file its finished owner unlinked while we opened it is not the
    one at `path` any more: then it tries again."""
    try:
        import fcntl
    except ImportError:  # Windows
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise on_busy() from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise on_busy()


def _is_lock_file(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LOCK_MAGIC))
    except OSError:
        return False
    return head in (b"", _LOCK_MAGIC)


def _lock_holder(path: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            text = handle.read(64).decode("ascii", "replace")
    except OSError:
        return None
    match = re.match(r"aepose-lock pid (\d+)", text)
    return int(match.group(1)) if match else None


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Persist a rename in `folder`; best effort (not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def probe_writable(folder: str) -> OSError | None:
    """Create and delete a hidden probe file in `folder` (`.aepose-probe-TOKEN`: the token chosen
    here and the file made exclusively, so it is only ever our own file that is deleted). Returns
    the error that refused it, or None."""
    probe = os.path.join(folder, f".aepose-probe-{new_token()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        return error
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None

