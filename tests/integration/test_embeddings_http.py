"""Embeddings from a server: ingestion and retrieval through ``langchain-openai``'s client against a
local OpenAI-compatible ``/v1/embeddings`` endpoint (loopback, started here), and an index built
with other embeddings refused with a message naming the setting."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.errors import KeelError
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore

DIMENSIONS = 256


def _vector(text: str) -> list[float]:
    """A deterministic bag-of-words embedding: good enough to rank by shared words."""
    vec = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


@pytest.fixture
def embeddings_url() -> Iterator[tuple[str, list[int]]]:
    batches: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            assert all(isinstance(t, str) for t in texts), "expected text, not tokens"
            batches.append(len(texts))
            data = []
            for i, text in enumerate(texts):
                vec = _vector(text)
                encoded: Any = vec
                if body.get("encoding_format") == "base64":
                    encoded = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                data.append({"object": "embedding", "index": i, "embedding": encoded})
            payload = {"object": "list", "data": data, "model": body["model"],
                       "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
            raw = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", batches
    finally:
        server.shutdown()
        server.server_close()


def test_ingest_and_retrieve_with_a_server_and_refuse_a_mixed_index(
    embeddings_url: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, batches = embeddings_url
    remote = Settings(home=tmp_path, embedding_backend="openai", openai_base_url=url,
                      embedding_model="local-hash-256", _env_file=None)  # type: ignore[call-arg]  # fmt: skip
    store = CorpusStore(remote, embedder_for(remote))
    report = store.ingest(progress=False)
    assert report.added > 0 and sum(batches) >= report.added

    found = store.search(
        "Customer C-1001 was charged twice, refund the duplicate charge", 4, date(2026, 11, 25)
    )
    assert any(e.source == "runbook-duplicate-charge" for e in found.evidence)

    # The same index opened with the local model: refused, naming what to change.
    local = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(KeelError, match="openai:local-hash-256"):
        CorpusStore(local, embedder_for(local)).search("refund", 4, date(2026, 11, 25))
