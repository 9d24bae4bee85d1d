"""The bench's install-size figure counts what `make demo` installs, from any environment."""

from __future__ import annotations

from evals.bench_startup import runtime_distributions, runtime_mb


def test_the_runtime_closure_follows_requirements_but_no_extra() -> None:
    names = runtime_distributions()
    assert {"keel", "langgraph", "langgraph-checkpoint", "chromadb", "onnxruntime"} <= set(names)
    assert "pydantic-core" in names  # a requirement of a requirement
    # The dev, serve, evals and torch extras are the development environment's, not the demo's.
    assert not {"pytest", "mypy", "aegra-api", "agentdojo", "sentence-transformers"} & set(names)


def test_its_size_is_the_sum_of_those_distributions_files() -> None:
    whole = runtime_mb()
    assert whole["distributions"] == len(runtime_distributions())
    assert runtime_mb("pydantic-core")["mb"] < whole["mb"]
