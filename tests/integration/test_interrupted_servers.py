"""Nothing left behind by an interrupted run: a process holding a PostgreSQL cluster (or a Chroma
server) through ``keel.servers`` is stopped by SIGTERM (a CI timeout) or SIGINT (Ctrl-C); its
server must be gone and its temporary folder removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HOLDER = """
import sys, time
from keel.servers import chroma_server, postgres_server

if sys.argv[1] == "postgres":
    with postgres_server(durable=False) as pg:
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        print(pid, pg.data_dir.parent, flush=True)
        time.sleep(600)
else:
    with chroma_server() as chroma:
        print(chroma.pid, chroma.path.parent, flush=True)
        time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent runs nothing
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.parametrize(
    ("server", "sig"),
    [
        ("postgres", signal.SIGTERM),
        ("postgres", signal.SIGINT),
        ("chroma", signal.SIGTERM),
    ],
    ids=["postgres-sigterm", "postgres-sigint", "chroma-sigterm"],
)
def test_an_interrupted_run_stops_its_server_and_removes_its_data(
    server: str, sig: signal.Signals
) -> None:
    if server == "postgres":
        from tests.integration.conftest import _require_postgres

        _require_postgres()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, server], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line, holder.stderr.read() if holder.stderr else ""
        pid_text, folder_text = line.split(maxsplit=1)
        server_pid, folder = int(pid_text), Path(folder_text.strip())
        assert _alive(server_pid) and folder.is_dir()

        holder.send_signal(sig)
        holder.wait(timeout=120)
    finally:
        if holder.poll() is None:  # pragma: no cover - only when the test already failed
            holder.kill()
            holder.wait()
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()
    deadline = time.monotonic() + 30
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(server_pid), f"{server} (pid {server_pid}) outlived the interrupted run"
    assert not folder.exists(), f"{folder} was left behind"
