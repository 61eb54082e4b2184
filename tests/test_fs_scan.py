"""One way to touch the file system: the package's source, scanned (issue 22).

Every create, replace, rename, truncate, folder creation and delete that aepose makes goes
through `aepose_cli/io/filesystem.py` (a run's `FileScope`, which refuses every path its output
plan did not declare). This test parses every other module of the package and fails on any call
that changes the file system by itself: `os.remove/unlink/rename/replace/rmdir/mkdir/makedirs/
ftruncate/truncate/utime/chmod/symlink/link`, `shutil.*` copies, moves and trees, `tempfile.*`,
`Path.unlink/rename/replace/rmdir/mkdir/touch/write_text/write_bytes/symlink_to/hardlink_to`,
`open(...)`/`Path.open(...)`/`io.open(...)` with a mode that writes (`w`, `a`, `x`, `+`),
`os.open(...)` with a flag that writes, and the libraries' own file writers (`torch.save`,
`torch.jit.save`, `torch.onnx.export`, `cv2.imwrite`, `numpy.save*`/`tofile`, a figure's
`savefig`, `av.open(..., "w")`) unless what they write into is memory (`io.BytesIO`) or a file
object a `FileScope` opened (`scope.open_temporary`).

The calls are found whatever name they go by: `import os as o`, `from os import remove`,
`from shutil import rmtree as r` and `getattr(os, "remove")` are read back to the module's own
name, and an `open`/`os.open` whose mode or flags are not literals counts as a write (the scan
cannot prove it reads).

The allow-list is the module itself, and nothing else: the lock and probe files, the encoder's
temporary, the caches under $AEPOSE_HOME all go through it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aepose_cli"
# The one module allowed to change the file system (see the module docstring). No other entry.
ALLOWED = {"io/filesystem.py"}

_OS_CALLS = {
    "remove", "unlink", "rename", "renames", "replace", "rmdir", "removedirs", "mkdir", "makedirs", "ftruncate",
    "truncate", "utime", "chmod", "chown", "symlink", "link", "mkfifo", "mknod",
}
_SHUTIL_CALLS = {"rmtree", "move", "copy", "copy2", "copyfile", "copytree", "copymode", "copystat", "make_archive", "unpack_archive"}
_TEMPFILE_CALLS = {"mkstemp", "mkdtemp", "TemporaryDirectory", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile"}
# Methods that only a Path (or a file) has under these names, whatever the receiver.
_PATH_METHODS = {
    "unlink", "rmdir", "mkdir", "touch", "write_text", "write_bytes", "symlink_to", "hardlink_to", "link_to", "rename",
    "chmod", "lchmod",
}
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_EXCL"}
# Library writers: (module-ish receiver, function) -> index of the destination argument.
_LIBRARY_WRITERS = {
    ("torch", "save"): 1, ("jit", "save"): 1, ("onnx", "export"): 2, ("cv2", "imwrite"): 0,
    ("np", "save"): 0, ("np", "savez"): 0, ("np", "savez_compressed"): 0, ("np", "savetxt"): 0,
    ("numpy", "save"): 0, ("numpy", "savez"): 0, ("numpy", "savez_compressed"): 0, ("numpy", "savetxt"): 0, ("onnx", "save"): 1, ("onnx", "save_model"): 1, ("request", "urlretrieve"): 1,
    ("urllib", "urlretrieve"): 1, ("hub", "download_url_to_file"): 1,
}
# Modules whose `open(name, mode)` takes the mode second (a Path's `open(mode)` takes it first).
_MODULE_OPENERS = {"io", "av", "gzip", "bz2", "lzma", "codecs", "tarfile"}
# Modules whose calls the scan knows by name.
_MODULES = {"os", "shutil", "tempfile", "io", "pathlib", "urllib", "torch", "cv2", "numpy", "onnx", *_MODULE_OPENERS}
# FileScope methods whose answer is a file object it opened, which a library may write into.
_SCOPE_FILE_METHODS = {"open_temporary"}


def _dotted(node: ast.AST, aliases: dict[str, str] | None = None) -> str:
    """`a.b.c` of a name or attribute chain; a first name bound by an import is read back to
    what it imported (`o.remove` with `import os as o`: `os.remove`)."""
    if isinstance(node, ast.Name):
        return (aliases or {}).get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, aliases)}.{node.attr}"
    return ""


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, for every import of a module the scan knows
    (`import os as o`, `from os import remove as rm`, `from shutil import rmtree`)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.split(".")[0] in _MODULES:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in _MODULES:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _mode(call: ast.Call, position: int) -> str | None:
    """The mode argument of an open-like call, when it is a literal (None: absent or not literal)."""
    for keyword in call.keywords:
        if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return str(call.args[position].value)
    return None


def _writes(mode: str | None) -> bool:
    return mode is not None and any(c in mode for c in "wax+")


def _mode_writes(call: ast.Call, position: int) -> bool:
    """Whether an open-like call may write: a literal mode that writes, or a mode the scan cannot
    read (a variable); an absent mode reads."""
    given = any(k.arg == "mode" for k in call.keywords) or len(call.args) > position
    mode = _mode(call, position)
    return _writes(mode) or (given and mode is None)


def _names_in(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Scanner(ast.NodeVisitor):
    """Finds the calls that change the file system in one module (see the module docstring)."""

    def __init__(self, source: str, aliases: dict[str, str]) -> None:
        self.source = source
        self.aliases = aliases
        self.found: list[tuple[int, str]] = []
        self.memory_or_scope: set[str] = set()  # names bound to BytesIO() or a scope's file object

    def visit_FunctionDef(self, node):  # noqa: N802 - ast's visitor name
        saved = set(self.memory_or_scope)
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Assign, ast.AnnAssign)) and isinstance(sub.value, ast.Call):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                if self._is_memory_or_scope_file(sub.value):
                    for target in targets:
                        for name in ast.walk(target):
                            if isinstance(name, (ast.Name, ast.Attribute)):
                                self.memory_or_scope.add(_dotted(name))
        self.generic_visit(node)
        self.memory_or_scope = saved

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def _is_memory_or_scope_file(self, call: ast.Call) -> bool:
        name = _dotted(call.func)
        return name.endswith("BytesIO") or name.split(".")[-1] in _SCOPE_FILE_METHODS

    def _is_memory(self, node: ast.AST | None) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Call) and _dotted(node.func).endswith("BytesIO"):
            return True
        return _dotted(node) in self.memory_or_scope

    def flag(self, node: ast.AST, what: str) -> None:
        self.found.append((node.lineno, what))

    def visit_Call(self, node: ast.Call):  # noqa: N802
        func = node.func
        name = _dotted(func, self.aliases)
        if name == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            name = f"{_dotted(node.args[0], self.aliases)}.{node.args[1].value}"  # getattr(os, "remove")
        head, _, attr = name.rpartition(".")
        if name in ("open", "io.open", "builtins.open"):
            if _mode_writes(node, 1):
                self.flag(node, f"{name}(..., {_mode(node, 1)!r})")
        elif name in ("io.FileIO", "FileIO"):
            # A file opened by name for writing (an fd already open, os.dup's, is not a new file).
            by_fd = bool(node.args) and isinstance(node.args[0], ast.Call) and _dotted(node.args[0].func, self.aliases) == "os.dup"
            if _mode_writes(node, 1) and not by_fd:
                self.flag(node, f"{name}(..., {_mode(node, 1)!r})")
        elif head == "os" and attr in _OS_CALLS:
            self.flag(node, name)
        elif head == "os" and attr == "open":
            flags = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "flags"), None)
            names = _names_in(flags) if flags is not None else set()
            readable = {"os", "O_RDONLY", "O_CLOEXEC", "O_NOFOLLOW", "O_DIRECTORY", "O_NONBLOCK", "O_NOCTTY", "O_BINARY"}
            if names & _WRITE_FLAGS or (flags is not None and not names <= readable) or (flags is not None and not names):
                self.flag(node, f"os.open with {sorted(names - readable) or 'flags it cannot read'}")
        elif head == "shutil" and attr in _SHUTIL_CALLS:
            self.flag(node, name)
        elif head == "tempfile" and attr in _TEMPFILE_CALLS:
            self.flag(node, name)
        elif name in _TEMPFILE_CALLS:
            self.flag(node, name)
        elif isinstance(func, ast.Attribute) and attr in _PATH_METHODS and head not in ("os", "shutil"):
            self.flag(node, f".{attr}()")
        elif isinstance(func, ast.Attribute) and attr == "replace" and len(node.args) == 1 and not node.keywords:
            # Path.replace(target); str.replace takes two arguments, dataclasses.replace keywords.
            self.flag(node, ".replace(target)")
        elif isinstance(func, ast.Attribute) and attr == "open" and head != "os":
            # Path.open(mode), av.open(target, mode), gzip.open(name, mode): writes unless into
            # memory or a scope's file.
            position = 1 if head.split(".")[-1] in _MODULE_OPENERS or head in _MODULE_OPENERS else 0
            if _mode_writes(node, position) and not (node.args and self._is_memory(node.args[0])):
                self.flag(node, f"{name}(..., {_mode(node, position)!r})")
        elif isinstance(func, ast.Attribute) and attr in ("savefig", "tofile"):
            if not (node.args and self._is_memory(node.args[0])):
                self.flag(node, f".{attr}()")
        else:
            for (module, function), index in _LIBRARY_WRITERS.items():
                if attr == function and head.split(".")[-1] == module:
                    target = node.args[index] if len(node.args) > index else None
                    if not self._is_memory(target):
                        self.flag(node, f"{name} into a file")
        self.generic_visit(node)


def scan_source(source: str) -> list[tuple[int, str]]:
    """(line, call) of every file system change in a module's source."""
    tree = ast.parse(source)
    scanner = _Scanner(source, _import_aliases(tree))
    scanner.visit(tree)
    return sorted(scanner.found)


def test_only_the_filesystem_module_touches_the_file_system():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED:
            continue
        for line, what in scan_source(path.read_text(encoding="utf-8")):
            offenders.append(f"aepose_cli/{relative}:{line}: {what}")
    assert not offenders, "file system changes outside aepose_cli/io/filesystem.py:\n" + "\n".join(offenders)


def test_the_allowed_module_exists_and_is_scanned_as_the_others():
    """The allow-list names a real file, and that file does change the file system (the scan
    finds what it is meant to find there)."""
    for relative in ALLOWED:
        source = (PACKAGE / relative).read_text(encoding="utf-8")
        found = {what for _, what in scan_source(source)}
        assert {"os.replace", "os.unlink", "os.mkdir", "os.rmdir"} <= found, found


@pytest.mark.parametrize(
    "snippet",
    [
        "import os\nos.remove('x')",
        "import os\nos.unlink(p)",
        "import shutil\nshutil.rmtree(d)",
        "import os\nos.rename(a, b)",
        "import os\nos.replace(a, b)",
        "from pathlib import Path\nPath('x').unlink(missing_ok=True)",
        "p.rename(q)",
        "p.replace(q)",
        "p.rmdir()",
        "import os\nos.rmdir(d)",
        "p.mkdir(parents=True)",
        "import os\nos.makedirs(d)",
        "p.write_text('x')",
        "p.write_bytes(b'x')",
        "open(p, 'w')",
        "open(p, mode='ab')",
        "open(p, 'x')",
        "open(p, 'r+b')",
        "p.open('w')",
        "import os\nos.open(p, os.O_WRONLY | os.O_CREAT)",
        "import os\nos.ftruncate(fd, 0)",
        "import tempfile\ntempfile.TemporaryDirectory()",
        "import av\nav.open(str(p), 'w', format='mp4')",
        "import torch\ntorch.save(state, 'x.pth')",
        "import torch\ntorch.onnx.export(m, args, 'x.onnx')",
        "import cv2\ncv2.imwrite('x.jpg', img)",
        "fig.savefig('x.png')",
        # Whatever name the call goes by.
        "import os as o\no.remove(p)",
        "from os import remove\nremove(p)",
        "from os import unlink as rm\nrm(p)",
        "from shutil import rmtree\nrmtree(d)",
        "import shutil as sh\nsh.move(a, b)",
        "from os import replace\nreplace(a, b)",
        "import os\ngetattr(os, 'unlink')(p)",
        "from pathlib import Path\nPath.unlink(p)",
        "from tempfile import mkstemp\nmkstemp()",
        # Modes and flags the scan cannot read count as writes.
        "open(p, mode)",
        "open(p, mode=how)",
        "p.open(mode)",
        "import os\nos.open(p, flags)",
        "import os\nos.open(p, os.O_RDONLY | extra)",
        "import io\nio.open(p, 'w')",
        "import io\nio.FileIO(p, 'w')",
        "import gzip\ngzip.open(p, 'wb')",
        "import os\nos.truncate(p, 0)",
        "import os\nos.utime(p)",
        "import os\nos.symlink(a, b)",
        "import os\nos.link(a, b)",
        "import os\nos.mkfifo(p)",
        "import os\nos.chmod(p, 0o777)",
        "p.touch()",
        "p.symlink_to(q)",
        "p.hardlink_to(q)",
        "import shutil\nshutil.copyfile(a, b)",
        "import shutil\nshutil.copytree(a, b)",
        "import onnx\nonnx.save(model, 'x.onnx')",
        "import urllib.request\nurllib.request.urlretrieve(url, 'x')",
        "import numpy as np\nnp.savez(p, a=x)",
        "x.tofile(p)",
    ],
)
def test_the_scan_finds_each_kind_of_change(snippet):
    assert scan_source(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "open(p)",
        "open(p, 'rb')",
        "'a-b'.replace('-', '_')",
        "import dataclasses\ndataclasses.replace(x, y=1)",
        "import io\ndef f():\n    buffer = io.BytesIO()\n    torch.onnx.export(m, args, buffer)\n    fig.savefig(buffer)",
        "import av, io\nav.open(io.BytesIO(), 'w', format='mp4')",
        "def f(scope):\n    path, handle = scope.open_temporary(t, '{name}')\n    av.open(handle, 'w', format='mp4')",
        "import os\nos.open(folder, os.O_RDONLY)",
        "import os\nos.open(folder, os.O_RDONLY | os.O_DIRECTORY)",
        "import io, os\nio.FileIO(os.dup(fd), 'w')",
        "import gzip\ngzip.open(p, 'rb')",
        "import os as o\no.path.join(a, b)",
        "from os import path\npath.exists(p)",
    ],
)
def test_the_scan_leaves_reads_and_memory_alone(snippet):
    assert not scan_source(snippet), snippet
