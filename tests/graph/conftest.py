"""The graph tier's `keel` fixture: the command in this process, its --json output parsed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_keel


@pytest.fixture
def keel(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, Any, str]]:
    def run(*argv: str) -> tuple[int, Any, str]:
        code, out, err = run_keel(home, monkeypatch, capsys, *argv)
        return code, json.loads(out) if "--json" in argv and code == 0 else out, err

    return run
