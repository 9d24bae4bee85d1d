"""The default embeddings: all-MiniLM-L6-v2 int8 on onnxruntime, offline, files checked."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from keel.errors import ConfigError
from keel.settings import Settings
from retrieval import embeddings
from retrieval.embeddings import OnnxMiniLM, TorchMiniLM, embedder_for


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_default_embeds_offline_into_normalised_384_d_vectors() -> None:
    embedder = embedder_for(Settings(_env_file=None))  # type: ignore[call-arg]
    assert isinstance(embedder, OnnxMiniLM)
    refund, window, weather, again = embedder.embed(
        [
            "What is our refund window?",
            "How many days do customers have to ask for a refund?",
            "The weather in Lisbon is sunny today.",
            "What is our refund window?",
        ]
    )
    assert len(refund) == 384
    assert math.isclose(math.sqrt(_cosine(refund, refund)), 1.0, rel_tol=1e-5)
    assert _cosine(refund, window) > _cosine(refund, weather) + 0.2
    assert refund == again  # the same text, the same vector, wherever it sits in a batch
    assert embedder.embed(["What is our refund window?"])[0] == refund


def test_a_text_longer_than_the_model_reads_is_cut_not_refused() -> None:
    long, head = OnnxMiniLM().embed(["refund " * 600, "refund " * 254])
    assert _cosine(long, head) > 0.999  # both cut at 256 tokens: [CLS] + 254 words + [SEP]


def test_a_model_file_that_is_not_the_measured_one_is_refused(tmp_path: Path) -> None:
    swapped = tmp_path / "model.onnx"
    swapped.write_bytes(b"not the model")
    with pytest.raises(ConfigError, match="not the file Keel was measured with"):
        embeddings._checked(swapped, embeddings.ONNX_SHA256)
    with pytest.raises(ConfigError, match="cannot be read"):
        embeddings._checked(tmp_path / "missing.onnx", embeddings.ONNX_SHA256)


def test_the_shipped_tokenizer_is_the_one_measured() -> None:
    path = embeddings.MINILM_DIR / "tokenizer.json"
    assert embeddings._checked(path, embeddings.TOKENIZER_SHA256) == path


def test_the_torch_backend_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a default install, where sentence-transformers is absent.
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"needs the torch extra.*\.\[torch\]"):
        TorchMiniLM().embed(["refund"])
