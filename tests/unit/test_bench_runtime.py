"""The bench's install-size figure counts what `make demo` installs, from any environment."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from evals.bench_startup import runtime_distributions, runtime_mb


def test_the_runtime_closure_follows_requirements_but_no_extra() -> None:
    names = runtime_distributions()
    assert {"keel", "langgraph", "langgraph-checkpoint", "chromadb", "onnxruntime"} <= set(names)
    assert "pydantic-core" in names  # a requirement of a requirement
    # A requirement's own extras are followed: psycopg[binary,pool], chromadb's uvicorn[standard].
    assert {"psycopg-binary", "psycopg-pool", "uvloop"} <= set(names)
    # The dev, serve, evals and torch extras are the development environment's, not the demo's.
    assert not {"pytest", "mypy", "aegra-api", "agentdojo", "sentence-transformers"} & set(names)


def test_its_size_is_the_sum_of_those_distributions_files() -> None:
    from importlib import metadata

    whole = runtime_mb()
    assert whole["distributions"] == len(runtime_distributions())
    # A leaf distribution (no requirements): its size is its RECORD's files plus their bytecode.
    assert runtime_distributions("typing-extensions") == ["typing-extensions"]
    leaf = metadata.distribution("typing-extensions")
    files = [str(f.locate()) for f in leaf.files or []]
    on_disk = {f for f in files if Path(f).is_file()}
    on_disk |= {
        c for f in files if f.endswith(".py")
        for c in [importlib.util.cache_from_source(f)] if Path(c).is_file()
    }  # fmt: skip
    assert runtime_mb("typing-extensions")["mb"] == round(
        sum(Path(f).stat().st_size for f in on_disk) / 1e6, 1
    )
    assert runtime_mb("pydantic-core")["mb"] < whole["mb"]
