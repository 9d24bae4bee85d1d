"""Doctest collection for the template's packages (``--doctest-modules`` in pyproject.toml).

A docstring whose every example carries ``# doctest: +SKIP`` illustrates a call that needs a
live app, a prepared home or a server; it is documentation, not a test. Such items are
deselected rather than reported as skipped, so that a skip in the suite's summary always means a
real test that did not run (and under ``CI=true`` there must be none).
"""

from __future__ import annotations

import doctest

import pytest
from _pytest.doctest import DoctestItem


def _illustrative(item: pytest.Item) -> bool:
    if not isinstance(item, DoctestItem) or item.dtest is None:
        return False
    examples = item.dtest.examples
    return bool(examples) and all(ex.options.get(doctest.SKIP, False) for ex in examples)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    illustrative = [item for item in items if _illustrative(item)]
    if illustrative:
        config.hook.pytest_deselected(items=illustrative)
        items[:] = [item for item in items if not _illustrative(item)]
