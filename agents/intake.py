"""Intake: refuse what cannot be a request, and pick out the business ids it names."""

from __future__ import annotations

import re
from typing import Any

from langgraph.runtime import Runtime

from agents.context import tokens
from graph.context import KeelContext, context_of
from graph.state import InputState


def refusal_reason(request: object, max_chars: int) -> str | None:
    """Why a request cannot be taken at all, or None when it can.

    Example:
        >>> refusal_reason("   ", 2000)
        'the request is empty'
    """
    if not isinstance(request, str) or not request.strip():
        return "the request is empty"
    if len(request) > max_chars:
        return f"the request is {len(request)} characters long; the limit is {max_chars}"
    if len(re.findall(r"[^\W\d_]{2,}", request)) < 2:
        return "the request has no words to act on"
    return None


def intake(state: InputState, runtime: Runtime[KeelContext]) -> dict[str, Any]:
    ctx = context_of(runtime)
    reason = refusal_reason(state.get("request"), ctx.settings.max_request_chars)
    if reason is None and tokens(state["request"]) > ctx.settings.planner_budget_tokens // 2:
        reason = (
            f"the request needs about {tokens(state['request'])} tokens; half the planner's "
            f"budget ({ctx.settings.planner_budget_tokens}) is the most a request may take"
        )
    if reason is not None:
        return {"status": "refused", "answer": f"Refused: {reason}.", "planner": "none"}
    request = state["request"].strip()
    return {
        "request": request,
        "entities": ctx.domain.extract_entities(request),
        "status": "running",
        "replans": 0,
        "cursor": 0,
    }
