"""Retriever: the evidence this request needs, with provenance, from the curated corpus."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph.context import KeelContext, context_of
from graph.state import RetrieverView


def retrieve(state: RetrieverView, runtime: Runtime[KeelContext]) -> dict[str, Any]:
    ctx = context_of(runtime)
    evidence = ctx.store.query(state["request"], ctx.settings.retrieval_k)
    return {"evidence": evidence}
