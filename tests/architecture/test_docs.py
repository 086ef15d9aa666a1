"""The documentation: every Python example in README.md and docs/ runs, every CLI command and every public name is
documented, and the README stays short.

Examples: each fenced ```python block of a page runs, in order, in one namespace per page, in a fresh folder holding
``raw/``: 12 synthetic spectrograms made by ``lardon_store.demo.make_dataset`` (``raw/<instrument>/p<pitch>_<n>.npy``,
loaded with their labels by ``lardon_store.demo.demo_callback``). A block fenced ```python norun is only parsed: for
the rare example that needs what a test machine has not (a cluster, a GPU); the page must say why next to it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import lardon_store
from lardon_store.cli import COMMANDS
from lardon_store.demo import make_dataset

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python( norun)?\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path) -> list[tuple[bool, str, int]]:
    """(runs, code, line) of each python block of ``page``."""
    text = page.read_text()
    return [(not m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in FENCE.finditer(text)]


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024, len(text.encode())
    lines = [line for line in text.splitlines() if line.rstrip().endswith(("# demo", "# tests"))]
    assert len(lines) == 2 and lines[0].rstrip().endswith("# demo") and lines[1].rstrip().endswith("# tests")


def test_docs_pages_exist_and_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert len(pages) >= 8
    for page in pages:
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_relative_links_point_at_files_that_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not target.startswith("mailto:"):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_example_runs(page, tmp_path, monkeypatch):
    found = blocks(page)
    if not found:
        pytest.skip(f"{page.name} has no python example")
    make_dataset(tmp_path / "raw", 12)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for runs, code, line in found:
        tree = ast.parse(code, f"{page.name}:{line}")
        if runs:
            exec(compile(tree, f"{page.name}:{line}", "exec"), namespace)  # noqa: S102 - our own documentation


def documented_text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_command_is_documented(command):
    assert f"lardon-store {command}" in (ROOT / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("name", sorted(lardon_store.__all__))
def test_every_public_name_is_documented(name):
    assert re.search(rf"\b{re.escape(name)}\b", documented_text()), f"{name} appears in no page of the docs"


def test_examples_clean_up_nothing_outside_their_folder():
    """The examples write only relative paths (into the test's folder), never an absolute one."""
    for page in PAGES:
        for _, code, line in blocks(page):
            assert not re.search(r"""["']/(?!dev/null)""", code), f"{page.name}:{line} writes an absolute path"
