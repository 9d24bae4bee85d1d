"""The Chroma connection behind the corpus index: embedded by default, a Chroma server with
``KEEL_CHROMA_URL``, its failures said in Keel's terms.

The only module that imports ``chromadb`` (about 3 s of a cold start). ``retrieval.store`` opens
it when the index is first used, so a command that never retrieves (``keel show``, ``resume``,
``trace``) never loads Chroma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import chromadb.errors
from chromadb.config import Settings as ChromaSettings

from keel.errors import ConfigError, CorpusMissing
from keel.settings import Settings


class Connection:
    """The client the settings name, opened and (for a server) checked once.

    Attributes:
        client: chromadb's client.
        url: the server's URL, or None for the embedded index.
        InvalidArgument: what Chroma raises for a vector of another size than the collection
            holds (among other bad arguments).
    """

    InvalidArgument = chromadb.errors.InvalidArgumentError

    def __init__(self, settings: Settings) -> None:
        self.url = settings.chroma_url
        self.client = server(self.url) if self.url else embedded(settings.chroma_dir)

    def check(self) -> None:
        """A server that went away raises its one-line ConfigError; an embedded index passes."""
        if self.url:
            server(self.url)


def embedded(path: Path) -> Any:
    """A client of the persistent index in ``path`` (created when missing)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        return chromadb.PersistentClient(
            path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
        )
    except Exception as err:  # chromadb raises several types for a broken directory
        raise CorpusMissing(
            f"the Chroma index at {path} cannot be opened ({err}); move it away and run "
            "`keel ingest`"
        ) from err


def server(url: str) -> Any:
    """A client of the Chroma server at ``url``; Keel still embeds on its own side."""
    parts = urlparse(url)
    secure = parts.scheme == "https"
    try:
        client = chromadb.HttpClient(
            host=parts.hostname or "localhost",
            port=parts.port or (443 if secure else 80),
            ssl=secure,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        client.heartbeat()
    except Exception as err:  # httpx, ValueError or chromadb errors, by failure and version
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(
            f"KEEL_CHROMA_URL={url}: no Chroma server answers there ({reason}); start one "
            "with `chroma run --path DIR --port PORT` or unset KEEL_CHROMA_URL for the "
            "embedded index"
        ) from err
    return client
