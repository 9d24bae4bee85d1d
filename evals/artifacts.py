"""An eval's written output: its result as JSON, its table as Markdown, and a plot if it has one."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def write_artifacts(
    folder: Path,
    stem: str,
    result: dict[str, Any],
    markdown: str,
    plot: Callable[[Path], Path] | None = None,
) -> dict[str, str]:
    """Write ``STEM.json`` and ``STEM.md`` into ``folder`` (and ``STEM.png`` when ``plot`` draws
    one); their paths, keyed ``json``, ``markdown`` and ``plot``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {"json": folder / f"{stem}.json", "markdown": folder / f"{stem}.md"}
    written["json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    written["markdown"].write_text(markdown, encoding="utf-8")
    if plot is not None:
        written["plot"] = plot(folder / f"{stem}.png")
    return {kind: str(path) for kind, path in written.items()}


def written_by(command: str, source: str) -> str:
    """The line a generated page opens with: the command that wrote it, so a reader who finds a
    figure learns how to measure it again.

    Example:
        >>> written_by("keel eval --suite compounding", "evals/compounding.py")
        'Written by `keel eval --suite compounding` (evals/compounding.py); do not edit by hand.'
    """
    return f"Written by `{command}` ({source}); do not edit by hand."


def _cell(value: Any) -> str:
    """One value as a table cell: lists joined, pipes escaped so the row stays one row."""
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict) and not (
        isinstance(value, list) and any(isinstance(item, dict | list) for item in value)
    )


def figure_tables(result: Mapping[str, Any], depth: int = 2) -> list[str]:
    """A result's figures as Markdown: its plain values in one table, then one section per nested
    object, and a list of objects as a table with one row each.

    Example:
        >>> print("\\n".join(figure_tables({"p50_ms": 1.5, "runs": [{"ok": 1}], "db": {"n": 2}})))
        | figure | value |
        |---|---|
        | `p50_ms` | 1.5 |
        <BLANKLINE>
        #### runs
        <BLANKLINE>
        | ok |
        |---|
        | 1 |
        <BLANKLINE>
        #### db
        <BLANKLINE>
        | figure | value |
        |---|---|
        | `n` | 2 |
    """
    lines: list[str] = []
    plain = [(key, value) for key, value in result.items() if _is_scalar(value)]
    if plain:
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| `{key}` | {_cell(value)} |" for key, value in plain]
    heading = "#" * min(depth + 2, 6)
    for key, value in result.items():
        if _is_scalar(value):
            continue
        lines += ["", f"{heading} {key}", ""]
        if isinstance(value, dict) and not _rows_of_figures(value):
            lines += figure_tables(value, depth + 1)
            continue
        if isinstance(value, dict):
            rows = [{"": f"`{name}`", **row} for name, row in value.items()]
        else:
            rows = [row if isinstance(row, dict) else {"value": row} for row in value]
        columns = [c for c in dict.fromkeys(k for row in rows for k in row)]
        columns = [c for c in columns if all(_is_scalar(row.get(c)) for row in rows)]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def _rows_of_figures(value: dict[str, Any]) -> bool:
    """Whether an object is one table: every entry an object of plain values (agents, attacks)."""
    return bool(value) and all(
        isinstance(row, dict) and row and all(_is_scalar(v) for v in row.values())
        for row in value.values()
    )


def figures_page(
    title: str, command: str, source: str, intro: str, result: Mapping[str, Any]
) -> str:
    """A generated page: what wrote it, a line on what it measures, then :func:`figure_tables`."""
    lines = [
        f"# {title}",
        "",
        f"<!-- {written_by(command, source)} -->",
        "",
        f"{written_by(command, source)} {intro}",
        "",
        *figure_tables(result, depth=0),
    ]
    return "\n".join(lines) + "\n"
