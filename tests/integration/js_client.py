"""The JavaScript LangGraph SDK (``@langchain/langgraph-sdk`` from npm, on the machine's Node.js),
driving a server the way Agent Chat UI does (``js/agent_chat_client.mjs``).

The SDK is installed by the test itself, once, into a cache directory (``KEEL_TEST_CACHE``, else
``~/.cache/keel-tests``), at the version pinned here. Node.js missing skips (saying how to get
it) except under ``CI=true``; npm failing to install always fails: a client that cannot be
installed is a broken test, not an absent one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import _unavailable

SDK = "@langchain/langgraph-sdk"
SDK_VERSION = "1.15.0"
"""The SDK's version Agent Chat UI builds with at the time of writing (its ``^1``)."""
SCRIPT = Path(__file__).with_name("js") / "agent_chat_client.mjs"
INSTALL_TIMEOUT_S = 300


def _cache() -> Path:
    root = os.environ.get("KEEL_TEST_CACHE") or str(Path.home() / ".cache" / "keel-tests")
    return Path(root) / f"langgraph-sdk-js-{SDK_VERSION}"


def js_sdk() -> Path:
    """The client script beside an installed SDK (installed first when it is not yet)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("the JavaScript client tests", "Node.js and npm are missing: install Node 20")
    target = _cache()
    if not (target / "node_modules" / SDK / "package.json").exists():
        # Into a directory of its own, then renamed: two test runs never share a half install.
        staging = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        done = subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--prefix", str(staging),
             f"{SDK}@{SDK_VERSION}"],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"npm install {SDK}@{SDK_VERSION} failed:\n{done.stdout}\n{done.stderr}")
        try:
            staging.rename(target)
        except OSError:  # another run installed it first
            shutil.rmtree(staging, ignore_errors=True)
    # Next to node_modules: Node resolves an ES module's imports from where the file is.
    script = target / SCRIPT.name
    if not script.exists() or script.read_bytes() != SCRIPT.read_bytes():
        shutil.copyfile(SCRIPT, script)
    return script


def js_client(script: Path, action: str, **params: Any) -> dict[str, Any]:
    """Run one client action (``stream``, ``search``) in Node; what the client saw."""
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps({"action": action, **params}),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen
