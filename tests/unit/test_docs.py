"""The README is a front door and the docs are a site (issue 22): what each promises, checked.

The site itself is built strictly by ``make docs`` (part of ``make test``): a broken link or
anchor inside ``docs/`` fails that build. The README is not part of the site, so its links are
checked here, with the same slugs MkDocs gives headings.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GENERATED = ("scorecard.md", "compounding.md", "engine.md", "budgets-eval.md")
"""The pages ``keel eval`` and ``keel bench`` write; every other page is written by hand."""

LINK = re.compile(r"\]\(([^)\s]+)\)")
CLOCK_TIME = re.compile(r"\b\d{1,2}:\d{2}( UTC)?\b")


def _outside_code(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside a fenced code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives a page's headings (the toc extension's slugify)."""
    return {
        slugify(re.sub(r"[`*]", "", line.lstrip("#").strip()), "-")
        for line in _outside_code(page.read_text())
        if re.match(r"#{1,6} ", line)
    }


def test_the_readme_fits_on_a_screen_or_few() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the rest belongs under docs/"


def test_the_readme_states_the_two_commands_and_ci_runs_the_second() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ci[-1] == "make test", f".ci/run must end by running exactly `make test`: {ci}"


def test_make_test_builds_the_docs_strictly() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test: (.*)$", makefile, re.M)
    assert test_target is not None and "docs" in test_target.group(1).split()
    docs_recipe = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in docs_recipe
    assert "--quiet" not in docs_recipe, "--quiet hides the warnings --strict counts"
    assert re.search(r"^strict: true$", (ROOT / "mkdocs.yml").read_text(), re.M)


def _numeric_rows(lines: list[str]) -> list[str]:
    """The table rows with a cell that is a number (a measured figure)."""
    return [
        line
        for line in lines
        if line.startswith("|")
        and any(
            re.fullmatch(r"[\d.,% /~<>-]*\d[\d.,% /msx~<>-]*", cell.strip())
            for cell in line.split("|")
        )
    ]


def test_the_readme_types_no_clock_time_and_no_measured_table() -> None:
    """Figures come from the generated pages (linked), never typed in with their hour."""
    lines = _outside_code(README.read_text())
    assert [line for line in lines if CLOCK_TIME.search(line)] == []
    numeric_cells = _numeric_rows(lines)
    assert numeric_cells == [], "a measured table belongs on a page its command writes"
    for page in GENERATED:
        assert f"docs/{page}" in README.read_text(), f"the README links the generated {page}"


@pytest.mark.parametrize("target", sorted(set(LINK.findall(README.read_text()))))
def test_every_readme_link_resolves(target: str) -> None:
    if re.match(r"https?://", target):
        return
    path, _, anchor = target.partition("#")
    file = ROOT / path
    assert file.exists(), f"README links {target}: no such file"
    if anchor:
        assert file.suffix == ".md"
        assert anchor in _anchors(file), f"README links {target}: no such heading"


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert [p for p in pages if p not in nav] == []


def _source_files() -> list[Path]:
    """The files whose comments and docstrings may point a reader at the docs."""
    skip = {".venv", ".git", "node_modules", "site", ".cache"}
    files = [
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
        ROOT / ".env.example",
        ROOT / ".ci" / "run",
    ]
    for path in ROOT.rglob("*.py"):
        parts = set(path.relative_to(ROOT).parts)
        if not parts & skip and not any(part.startswith(".venv") for part in parts):
            files.append(path)
    return files


def test_code_points_at_docs_pages_that_exist_not_at_readme_sections() -> None:
    """A docstring links to a page instead of a README section (the README is only a front door)."""
    readme_sections, missing = [], []
    for path in _source_files():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if re.search(r"README(,|'s)? *\"|see (the )?README", text) and path != Path(__file__):
            readme_sections.append(str(where))
        for page in set(re.findall(r"(?<![\w/])docs/([\w-]+\.md)", text)):
            if not (DOCS / page).exists():
                missing.append(f"{where}: docs/{page}")
    assert readme_sections == [], "point at a page under docs/ instead"
    assert missing == []


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code_digest(notebook: dict[str, Any]) -> str:
    """What ``docs/execute_notebooks.py`` records: the sha256 of the code cells' sources."""
    sources = [
        "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    ]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_with_the_outputs_of_their_code(path: Path) -> None:
    """The docs show the committed outputs (not executed at build): they must be this code's."""
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    recorded = notebook["metadata"].get("keel", {}).get("sources_sha256")
    assert recorded == _code_digest(notebook), f"{path.name}'s code changed: run `make notebooks`"
    assert all(cell["execution_count"] is not None for cell in code), "a cell was not executed"
    outputs = [output for cell in code for output in cell["outputs"]]
    assert outputs, f"{path.name} has no outputs"
    assert [o for o in outputs if o["output_type"] == "error"] == []


def test_the_evals_notebook_shows_its_plots() -> None:
    notebook = json.loads((ROOT / "notebooks" / "evals.ipynb").read_text())
    images = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2, "the fault-rate plot and the compounding curve"


def test_the_agentdojo_page_explains_and_its_figures_are_written_by_the_command() -> None:
    """``docs/agentdojo.md`` is prose; its tables are the pages ``keel eval --suite agentdojo
    --out docs`` writes (``--without-screen`` for the ablation's)."""
    lines = _outside_code((DOCS / "agentdojo.md").read_text())
    assert _numeric_rows(lines) == []
    text = "\n".join(lines)
    pages = {
        "agentdojo-figures.md": "--out docs`",
        "agentdojo-without-screen.md": "--without-screen --out docs`",
    }
    for page, command in pages.items():
        assert f"]({page})" in text
        generated = (DOCS / page).read_text()
        assert "Written by `keel eval --suite agentdojo" in generated
        assert command in generated and "do not edit by hand" in generated
