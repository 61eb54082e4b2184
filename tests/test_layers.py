"""The package's layers, read from its source: who may import whom, and who may print or exit.

    cli/        the application: the only package that prints, exits or changes the process
    jobs/       library runs (plan, resume, run on a Runner, return an outcome)
    engines/    where a run executes (this process, Ray)
    the rest    the library's stages, models, files and values

Parsed with `ast`, so the rules hold for every import wherever it is written (inside functions
too: the circle this test was written against ran through a function-level import), except those
under `if TYPE_CHECKING:`, which never run. Fails, naming the module and line, on:

* an import between `jobs` and `engines` in either direction (they meet through `jobs.base.Runner`);
* anything outside `cli/` importing `aepose_cli.cli`;
* an import circle between modules (one module's import of a package counts as an import of
  the package's `__init__`);
* `print(...)`, `sys.exit(...)`, `exit(...)`/`quit(...)`, `os._exit(...)` or `click.echo(...)`
  outside `cli/`, and rich or click imported outside `cli/`.

And, by running it: `python -X importtime -c "import aepose_cli"` imports none of Ray, rich,
click, ONNX Runtime, OpenVINO or the evaluator.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aepose_cli"
ROOT = "aepose_cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an ImportFrom names (its `module` part)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _under_type_checking(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                for sub in ast.walk(inner):
                    skipped.add(id(sub))
    return skipped


def _imports(module: str) -> list[tuple[str, int]]:
    """(imported aepose module, line) for every import that runs; a name imported from a
    package that is one of its modules counts as that module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skipped = _under_type_checking(tree)
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    found.append((_existing(alias.name), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not (target == ROOT or target.startswith(ROOT + ".")):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((candidate if candidate in MODULES else _existing(target), node.lineno))
    return found


def _existing(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _layer(name: str) -> str | None:
    if name == f"{ROOT}.__main__":  # `python -m aepose_cli`: the command line's own entry point
        return "cli"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("cli", "jobs", "engines") else None


GRAPH = {module: _imports(module) for module in MODULES}


def test_the_package_is_found():
    assert {"aepose_cli.cli.main", "aepose_cli.jobs.base", "aepose_cli.engines.stages", "aepose_cli.types"} <= set(MODULES)


FORBIDDEN_IMPORTS = {
    "jobs and engines never import each other": lambda module, target: {_layer(module), _layer(target)} == {"jobs", "engines"},
    "nothing below cli imports cli": lambda module, target: _layer(target) == "cli" and _layer(module) != "cli",
}


@pytest.mark.parametrize("rule", FORBIDDEN_IMPORTS)
def test_layers_import_only_downwards(rule):
    forbidden = FORBIDDEN_IMPORTS[rule]
    found = [
        f"{module} (line {line}) imports {target}"
        for module, imports in GRAPH.items()
        for target, line in imports
        if forbidden(module, target)
    ]
    assert found == [], rule


def test_no_import_circles():
    """Depth-first search for a back edge; the circle is named module by module."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target, _line in GRAPH[module]:
            if target == module or target not in MODULES:
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module)
    assert circles == []


_APPLICATION_CALLS = {("print",), ("exit",), ("quit",), ("sys", "exit"), ("os", "_exit"), ("click", "echo"), ("click", "secho")}


def _call_name(node: ast.Call) -> tuple[str, ...]:
    func, parts = node.func, []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return tuple(reversed(parts))


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) != "cli"])
def test_only_the_command_line_prints_or_exits(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skipped = _under_type_checking(tree)
    found = [
        f"line {node.lineno}: {'.'.join(_call_name(node))}(...)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _call_name(node) in _APPLICATION_CALLS
    ]
    found += [
        f"line {node.lineno}: imports {name}"
        for node in ast.walk(tree)
        if id(node) not in skipped
        for name in (
            [alias.name for alias in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        )
        if name.split(".")[0] in ("rich", "click")
    ]
    assert found == [], f"{module}: the library prints, exits or draws only in cli/"


def test_importing_the_library_imports_no_application_or_optional_runtime():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import aepose_cli"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "aepose_cli.estimator" in imported  # the report is what it claims to be
    unwanted = sorted(
        name for name in imported
        if name.split(".")[0] in ("ray", "rich", "click", "onnxruntime", "openvino", "onnx")
        or name.startswith(("aepose_cli.evaluation", "aepose_cli.cli", "aepose_cli.engines.ray"))
    )
    assert unwanted == []
