"""The corpus store opens one Chroma connection however many runs reach it first at once.

A serving process, or the threads bench's 200 threads, runs nodes on threads: each may be the
first to retrieve. Two embedded Chroma clients opened at once on one folder fail ("Could not
connect to tenant default_tenant"), so the first use must open the connection exactly once.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import retrieval.chroma
from keel.settings import Settings
from retrieval.store import CorpusStore


def test_runs_that_retrieve_first_at_once_share_one_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []

    class SlowConnection:
        def __init__(self, settings: Settings) -> None:
            time.sleep(0.05)  # opening a client takes a while: the window two runs race in
            opened.append(self)

    monkeypatch.setattr(retrieval.chroma, "Connection", SlowConnection)
    store = CorpusStore(Settings(home=tmp_path), embedder=Any)  # type: ignore[arg-type]
    start = threading.Barrier(8)

    def first_use() -> object:
        start.wait()
        return store.connection()

    with ThreadPoolExecutor(8) as pool:
        connections = list(pool.map(lambda _: first_use(), range(8)))
    assert len(opened) == 1, f"{len(opened)} Chroma clients opened on one folder"
    assert all(c is opened[0] for c in connections)
