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
_PATH_METHODS = {"unlink", "rmdir", "mkdir", "touch", "write_text", "write_bytes", "symlink_to", "hardlink_to", "rename", "chmod"}
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_EXCL"}
# Library writers: (module-ish receiver, function) -> index of the destination argument.
_LIBRARY_WRITERS = {
    ("torch", "save"): 1, ("jit", "save"): 1, ("onnx", "export"): 2, ("cv2", "imwrite"): 0,
    ("np", "save"): 0, ("np", "savez"): 0, ("np", "savez_compressed"): 0, ("np", "savetxt"): 0,
    ("numpy", "save"): 0,
}
# FileScope methods whose answer is a file object it opened, which a library may write into.
_SCOPE_FILE_METHODS = {"open_temporary"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


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


def _names_in(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Scanner(ast.NodeVisitor):
    """Finds the calls that change the file system in one module (see the module docstring)."""

    def __init__(self, source: str) -> None:
        self.source = source
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
        name = _dotted(func)
        head, _, attr = name.rpartition(".")
        if name == "open" or name == "io.open":
            if _writes(_mode(node, 1)):
                self.flag(node, f"{name}(..., {_mode(node, 1)!r})")
        elif head == "os" and attr in _OS_CALLS:
            self.flag(node, name)
        elif head == "os" and attr == "open":
            flags = _names_in(node.args[1]) if len(node.args) > 1 else set()
            if flags & _WRITE_FLAGS:
                self.flag(node, f"os.open with {sorted(flags & _WRITE_FLAGS)}")
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
            # Path.open(mode), av.open(target, mode): writes unless into memory or a scope's file.
            position = 1 if head.split(".")[-1] == "av" or head == "av" else 0
            mode = _mode(node, position)
            if _writes(mode) and not (node.args and self._is_memory(node.args[0])):
                self.flag(node, f"{name}(..., {mode!r})")
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
    scanner = _Scanner(source)
    scanner.visit(ast.parse(source))
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
    ],
)
def test_the_scan_leaves_reads_and_memory_alone(snippet):
    assert not scan_source(snippet), snippet
