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
GENERATED = (
    "scorecard.md",
    "compounding.md",
    "engine.md",
    "budgets-eval.md",
    "hostile.md",
    "agentdojo-figures.md",
    "agentdojo-without-screen.md",
    "benchmarks-figures.md",
    "scale-demo.md",
)
"""The pages ``keel eval``, ``keel bench`` and ``make scale-demo`` write (and ``eval-SUITE.md``,
``scorecard-DOMAIN.md``, see :func:`_generated`); every other page is written by hand."""
README_LINKS = ("scorecard.md", "compounding.md", "engine.md", "budgets-eval.md", "hostile.md")
"""The generated pages the README's paragraph on measurements names, each beside its command."""

UNIT = r"(?:ms|s|%|x|×|MB|GB|KB|µs|min|minutes|seconds|hours|tokens|threads/s|threads/min)"
MEASURED = re.compile(
    rf"(?<![\w.$`-])\d[\d,]*(?:\.\d+)?(?: ?{UNIT}(?![\w/])| threads a minute|"
    r" of \d+ (?:completed|resumes|runs|attacks|threads))"
    r"|(?<![\w.])0\.\d{2,}(?![\d.])"
)
"""A figure that looks measured: a number with a unit of time, size, share or speed, a count
"N of M" done, or a fraction such as 0.83 (a rate)."""
SETTINGS = (
    # A limit or a default is a setting, whatever its unit: "at most 1.5", "default 30 s".
    rf"\b(?:at most|at least|under|default:?|defaults to|every|within) \d[\d,.]* ?{UNIT}?",
    rf"\b\d[\d.]* ?{UNIT} (?:lease|busy timeout|timeout|client timeout)\b",  # a setting named
    r"\b(?:Aegra|aegra-api|langgraph-api|langsmith) \d+\.\d+(?:\.\d+)?",  # versions
    r"slowed to \d[\d.]* s with `KEEL_FAULTS`",  # a fault injected by a test
    r"answers at 8,000 tokens",  # the budgets eval's misbehaving model
    r"about 69% benign utility and about 58% targeted ASR",  # quoted from AgentDojo's paper
)
"""Figures that are settings, limits or targets, not measurements (patterns): each is allowed with
the words around it, so the same number typed in as a measurement is still caught."""

LINK = re.compile(r"\]\(([^)\s]+)\)")
CLOCK_TIME = re.compile(r"\b\d{1,2}:\d{2}( UTC)?\b|\b20\d\d-\d\d-\d\d\b")
"""A clock time or a date typed in beside a figure ("at 18:50 UTC", "2026-12-02")."""


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
    for page in README_LINKS:
        assert f"docs/{page}" in README.read_text(), f"the README links the generated {page}"


def _generated(page: Path) -> bool:
    return (
        page.name in GENERATED
        or re.fullmatch(r"(eval|scorecard)-[\w-]+\.md", page.name) is not None
    )


def _hand_written() -> list[Path]:
    return [README, *(p for p in sorted(DOCS.glob("*.md")) if not _generated(p))]


def test_generated_pages_say_which_command_writes_them() -> None:
    """A reader who finds a figure on a generated page learns how to measure it again."""
    pages = [p for p in sorted(DOCS.glob("*.md")) if _generated(p)]
    assert [
        p.name
        for p in pages
        if not re.search(
            r"Written by `(KEEL_\w+=\S+ )*(keel (eval|bench)|make scale-demo)[^`]*`"
            r".*(do not edit|never edited) by hand",
            p.read_text(),
        )
    ] == []


def _paragraphs(text: str) -> list[str]:
    """Prose joined into paragraphs (a phrase may wrap), each table row on its own."""
    blocks: list[str] = []
    joining = False
    for line in _outside_code(text):
        if line.startswith("|") or not line.strip():
            blocks += [line] if line.strip() else []
            joining = False
        elif joining:
            blocks[-1] += " " + line.strip()
        else:
            blocks.append(line.strip())
            joining = True
    return blocks


def _measured_figures(path: Path) -> list[str]:
    """What a hand-written page says that looks measured (settings allowed), with its context."""
    found = []
    for block in _paragraphs(path.read_text()):
        bare = block
        for phrase in SETTINGS:
            bare = re.sub(phrase, "", bare)
        hit = MEASURED.search(bare) or CLOCK_TIME.search(bare)
        if hit:
            found.append(f"{path.name}: ...{bare[max(hit.start() - 60, 0) : hit.end() + 20]}...")
        elif _numeric_rows([bare]):
            found.append(f"{path.name}: {bare[:120]}")
    return found


@pytest.mark.parametrize("path", _hand_written(), ids=lambda p: p.name)
def test_hand_written_pages_quote_no_measured_figure(path: Path) -> None:
    """A measured figure is written by the command that measures it, on a generated page that the
    hand-written one links; typed in by hand it goes stale the next run (issue 22)."""
    assert _measured_figures(path) == [], "link the generated page (keel bench/eval --out docs)"


@pytest.mark.parametrize(
    ("line", "measured"),
    [
        ("Keel 35.9 ms, the bare graph 34.2 ms", True),
        ("success falls from 100 % to 60 % at 30 % errors", True),
        ("200 of 200 completed in 10.3 s", True),
        ("| `threads` | 200 | met |", True),
        ("recall 0.828 against 0.634", True),
        ("the old demo's 183 threads a minute", True),
        ("measured at 18:50 UTC", True),
        ("re-measured (2026-12-02, fresh `KEEL_HOME`)", True),
        ("Python 3.12 and `make`, on a fresh clone", False),
        ("`KEEL_LEASE_TTL_S` and aegra-api 0.11.0, on port 8123", False),
        ("a plan of 4 steps, 3 agents", False),
        ("the lease is renewed every 10 s; timeouts default 30 s, at most 1.5 x the floor", False),
        ("p50 at most 100 ms: met, 65.1 ms", True),
    ],
)
def test_the_figure_pattern_tells_a_measurement_from_prose(
    tmp_path: Path, line: str, measured: bool
) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\n{line}\n\n```bash\nkeel bench  # 12 ms\n```\n")
    assert bool(_measured_figures(page)) is measured


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
