"""Each command imports only what it needs: the commands that read or answer a thread load neither
Chroma nor an embedding model, nor LangChain's agent package, nor a Postgres driver or the engine
without their settings; langchain-openai only when a model is configured.

The commands run through the CLI's own ``main`` in a fresh interpreter, which reports after each
which heavy modules it has loaded. The speed itself is a figure for ``keel bench --only startup``,
not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFUND_REQUEST

HEAVY = (
    "chromadb",
    "onnxruntime",
    "tokenizers",
    "sentence_transformers",
    "torch",
    "transformers",
    "langchain_openai",
    "openai",
    "langchain",
    "psycopg",
    "psycopg_pool",
    "aegra_api",
    "aegra_cli",
    "fastapi",
    "sqlalchemy",
    "redis",
)
"""Modules that cost a cold start seconds or a good part of one: the index, the embedding runtimes,
the model client; LangChain's agent package (``langchain``, not ``langchain_core``: the approval
wire format declares its HITL types itself, ``graph/wire.py``); and what only Postgres
(``KEEL_POSTGRES_URL``) or the serving engine needs."""

CHILD = """
import contextlib, io, json, sys
from keel.cli import main
reports = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse's --help
            code = exit.code
    heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
    domain = any(name.startswith("domains.") for name in sys.modules)
    own = sorted(name for name in sys.modules if name.split(".")[0] == "evals"
                 or name.startswith("stores.") and "postgres" in name)
    reports.append({"argv": argv, "exit": code, "output": out.getvalue(), "heavy": heavy,
                    "domain_loaded": domain, "own_heavy": own})
print(json.dumps(reports))
"""
"""Runs keel commands one after another in one interpreter, reporting after each which heavy
modules are loaded so far, whether a domain is (a module under ``domains``; the settings
import the package itself to locate the domain's folder), and which of Keel's own modules that
only some commands need are (``own_heavy``: the evals package, which ``keel --help`` and ``keel
eval``/``bench`` load through the ``keel.verbs`` entry points; the Postgres stores,
``stores.*postgres*``, for ``KEEL_POSTGRES_URL`` only). Loaded modules stay loaded, so a command
whose report is clean, and every command before it, imported none of them."""


def _commands(
    home: Path, *commands: tuple[str, ...], env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run ``keel`` commands in order in one new interpreter; each one's exit code, output and
    the heavy modules loaded up to its end."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    clean.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **(env or {}))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(commands), json.dumps(HEAVY)],
        env=clean,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    reports: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return reports


@pytest.fixture
def waiting_thread(home: Path) -> str:
    """A refund thread waiting for its approval, made by ``keel run`` in its own process."""
    [started] = _commands(home, ("run", REFUND_REQUEST, "--json"))
    assert started["exit"] == 0
    outcome = json.loads(started["output"])
    assert outcome["status"] == "awaiting_approval"
    # A run retrieves: it loads the index and the embedding model (the detector sees them).
    assert {"chromadb", "onnxruntime"} <= set(started["heavy"])
    assert "torch" not in started["heavy"]
    assert started["own_heavy"] == []  # no evals (no entry point read), no Postgres store
    thread_id: str = outcome["thread_id"]
    return thread_id


@pytest.mark.integration
def test_the_commands_that_do_not_retrieve_import_nothing_heavy(
    home: Path, waiting_thread: str
) -> None:
    help_, shown, missing, runs, access, resumed, after = _commands(
        home,
        ("--help",),
        ("show", waiting_thread, "--json"),
        ("show", "NO-SUCH-THREAD", "--json"),
        ("runs", "--json"),
        ("access", "--json"),
        ("resume", waiting_thread, "--approve", "--json"),
        ("show", waiting_thread, "--json"),
    )
    run_id = json.loads(shown["output"])["run_id"]
    trace, explain = _commands(home, ("trace", run_id, "--json"), ("explain", run_id, "--json"))
    for report in (help_, shown, missing, runs, access, resumed, after, trace, explain):
        assert report["heavy"] == [], report
        assert report["exit"] == (2 if report is missing else 0), report
    # `keel --help` lists the entry points' verbs (evals.cli), and no command after it loads
    # more of the evals or a Postgres store; trace and explain, in an interpreter of their own,
    # load neither.
    for report in (help_, shown, missing, runs, access, resumed, after):
        assert report["own_heavy"] == ["evals", "evals.cli"], report
    for report in (trace, explain):
        assert report["own_heavy"] == [], report
    # Reading a thread's status builds no runtime context: no domain, tools, manifest or corpus.
    for report in (help_, shown, missing, runs):
        assert not report["domain_loaded"], report
    assert access["domain_loaded"]  # the detector sees a domain where one is loaded
    assert "usage: keel" in help_["output"]
    assert json.loads(runs["output"])["runs"]
    assert json.loads(access["output"])["agents"]
    assert json.loads(trace["output"])
    assert json.loads(explain["output"])
    # The resume really ran the thread to its end: executor and tools, without Chroma.
    assert json.loads(resumed["output"])["status"] == "done"
    assert json.loads(after["output"])["status"] == "done"


@pytest.mark.integration
def test_langchain_openai_loads_when_a_model_is_configured(home: Path) -> None:
    # No request goes out: `resume` builds the context, whose planner model is a ChatOpenAI, and
    # finds no thread to resume.
    [configured] = _commands(
        home,
        ("resume", "NO-SUCH-THREAD", "--approve", "--json"),
        env={"KEEL_PLANNER_MODEL": "gpt-4o-mini", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    assert configured["exit"] == 2
    assert "langchain_openai" in configured["heavy"]
    assert "chromadb" not in configured["heavy"]
    assert configured["own_heavy"] == []
