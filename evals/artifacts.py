"""An eval's written output: its result as JSON, its table as Markdown, and a plot if it has one."""

from __future__ import annotations

import json
from collections.abc import Callable
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
