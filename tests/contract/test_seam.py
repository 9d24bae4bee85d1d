"""The second domain came through the seam: no machinery module imports any domain.

This reuses the import-linter contract ``make lint`` enforces ("The machinery imports no
domain", pyproject.toml) rather than restating it: the test runs it on the import graph that now
holds both domains and checks that the graph it judged does include them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "The machinery imports no domain"


def test_no_machinery_module_imports_a_domain() -> None:
    graph = grimp.build_graph("domains", "keel", "graph", "agents", "tools")
    for domain in ("domains.support_desk", "domains.incident_desk"):
        assert f"{domain}.domain" in graph.modules, f"{domain} is not on the import graph"
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    verdicts = [line for line in lint.stdout.splitlines() if line.startswith(CONTRACT)]
    assert len(verdicts) == 1 and " KEPT" in verdicts[0], lint.stdout[-2000:]
