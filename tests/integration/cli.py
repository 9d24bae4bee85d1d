"""The ``keel`` command as the integration tests run it: a process of its own, on a home of its
own, with none of the caller's ``KEEL_*``/``OPENAI_*`` settings leaking in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from domains.support_desk.backend import DemoBackend

KEEL = str(Path(sys.executable).parent / "keel")


def keel_env(home: Path, settings: Mapping[str, str], **more: str) -> dict[str, str]:
    """This process's environment without Keel or model settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **settings, **more)
    return env


def keel(home: Path, settings: Mapping[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``keel ARGV --json`` with ``settings`` (``KEEL_*``), waited for up to three minutes."""
    return subprocess.run(
        [KEEL, *argv, "--json"], env=keel_env(home, settings), cwd=home, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip


def json_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a successful command printed (the test fails with its stderr otherwise)."""
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def side_effects(home: Path) -> tuple[list[tuple[str, float]], list[str]]:
    """The support desk's refunds (charge, amount) and e-mail recipients on this home."""
    backend = DemoBackend(home / "support_desk.sqlite")
    refunds = [(r["charge_id"], r["amount"]) for r in backend.refunds()]
    return refunds, [m["recipient"] for m in backend.outbox()]
