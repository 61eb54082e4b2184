"""The README stays the two-minute page, and the docs site lists every page.

The README is what a newcomer reads first and what `.ci/run` follows: it must keep its two
commands word for word (the install-and-run line, and the test command CI runs), stay within 130
lines, and point only at files that exist. Every page of `docs/` must be in `mkdocs.yml`'s nav,
or the site would build without it (`mkdocs build --strict` in `.ci/run` checks links and
anchors; this checks the nav without building).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"

INSTALL_AND_RUN = "pip install torch==2.13.0 && pip install . && aepose image samples/coco_000000397133.jpg"
TEST_COMMAND = 'pip install -e ".[test,ray]" && python -m pytest -q'
MAX_README_LINES = 130


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/ (at most {MAX_README_LINES})"


@pytest.mark.parametrize("command", [INSTALL_AND_RUN, TEST_COMMAND], ids=["install-and-run", "tests"])
def test_readme_keeps_its_commands(command):
    lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert command in lines, f"README.md lost the line {command!r}"


def test_ci_runs_the_readmes_test_command():
    """`.ci/run` installs what the README's test command installs and runs its pytest line."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    run = TEST_COMMAND.split("&&")[1].strip()
    # The README installs [test,ray]; CI may add extras after them (docs), not drop one.
    assert re.search(r'pip install --quiet -e "\.\[test,ray[],]', ci), ".ci/run no longer installs the test and ray extras"
    assert run in [line.strip() for line in ci.splitlines()], f".ci/run no longer runs {run!r}"


def test_readme_links_point_at_files_that_exist():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "README.md links to no docs page"
    missing = [t for t in local if not (REPO / t).is_file()]
    assert missing == [], f"README.md links to missing files: {missing}"


def _nav_files(nav) -> list[str]:
    """Every file named in a mkdocs nav (a list of strings, {title: file} or {title: [...]})."""
    files: list[str] = []
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            files.extend(_nav_files(value) if isinstance(value, list) else [value])
    return files


def test_every_docs_page_is_in_the_mkdocs_nav():
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    import yaml  # a dependency of mkdocs

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    docs_dir = REPO / config.get("docs_dir", "docs")
    in_nav = _nav_files(config["nav"])
    pages = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md"))
    assert sorted(set(in_nav)) == sorted(in_nav), f"a page is listed twice in mkdocs.yml: {in_nav}"
    assert sorted(in_nav) == pages, (
        f"not in mkdocs.yml's nav: {sorted(set(pages) - set(in_nav))}; in the nav but missing: {sorted(set(in_nav) - set(pages))}"
    )
