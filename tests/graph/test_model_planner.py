"""The graph with a chat model as planner. The model is a langchain-core fake (the model
boundary); everything after it (validation, approval, execution) is the real thing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult

from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from keel.app import Decision, KeelApp
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST


class UnreachableModel(BaseChatModel):
    """A chat model whose endpoint is down: every call raises, as the HTTP client would."""

    @property
    def _llm_type(self) -> str:
        return "unreachable"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise ConnectionError("connection refused")


def _app(settings: Settings, model: BaseChatModel) -> Iterator[KeelApp]:
    context = KeelContext.from_settings(settings, planner_model=model)
    with KeelApp.open(settings, context) as app:
        yield app


def _plan_reply(chunk_id: str, amount: float) -> AIMessage:
    plan = {
        "intent": "refund_duplicate_charge",
        "steps": [
            {
                "tool": "refund_charge",
                "args": {"charge_id": "CH-3002", "amount": amount, "reason": "duplicate"},
                "purpose": "refund the duplicate",
                "evidence": [chunk_id],
            }
        ],
    }
    return AIMessage(content=json.dumps(plan))


@pytest.fixture
def runbook_chunk(settings: Settings) -> str:
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    return next(e.chunk_id for e in hits if e.kind == "runbook")


def test_a_model_plan_is_validated_and_approved_like_any_other(
    settings: Settings, backend: DemoBackend, runbook_chunk: str
):
    model = FakeMessagesListChatModel(responses=[_plan_reply(runbook_chunk, 49.0)])
    for app in _app(settings, model):
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval"
        assert waiting.planner.startswith("model:")
        done = app.resume(waiting.thread_id, Decision(kind="approve"))
        assert done.status == "done"
    assert [r["amount"] for r in backend.refunds()] == [49.0]


def test_a_model_plan_that_breaks_a_rule_is_sent_back_with_reasons(
    settings: Settings, backend: DemoBackend, runbook_chunk: str
):
    model = FakeMessagesListChatModel(
        responses=[_plan_reply(runbook_chunk, 490.0), _plan_reply(runbook_chunk, 49.0)]
    )
    for app in _app(settings, model):
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval"
        assert waiting.pending is not None and waiting.pending[0].args["amount"] == 49.0
    assert backend.refunds() == []


def test_an_unreachable_model_falls_back_to_the_runbook_planner_and_says_so(
    settings: Settings, backend: DemoBackend
):
    for app in _app(settings, UnreachableModel()):
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval"
        assert waiting.planner == "runbook (model failed)"


def test_a_replan_shows_the_model_what_the_thread_already_did(settings: Settings) -> None:
    """The planner node builds working memory from the thread's results (the product path, not
    an eval's): the refund made at step 1 is in the prompt of a plan made after it, side
    effect first. The model is evals.scripted's recording fake."""
    from langgraph.runtime import Runtime

    from agents.planner import SUBMIT_PLAN, plan
    from evals.scripted import ScriptedToolModel
    from graph.state import PlannerView, ToolOutcome

    answer = {"intent": "noted", "steps": [], "answer": "noted"}
    model = ScriptedToolModel(
        responses=[AIMessage("", tool_calls=[{"name": SUBMIT_PLAN, "args": answer, "id": "p"}])] * 2
    )
    runtime = Runtime(context=KeelContext.from_settings(settings, planner_model=model))
    refund = ToolOutcome(step=0, tool="refund_charge", args={"charge_id": "CH-3002"}, ok=True,
                         output={"refund_id": "RF-5001", "status": "settled"})  # fmt: skip
    state: PlannerView = {"request": REFUND_REQUEST, "entities": {"invoice_id": "INV-2001"}}
    plan(state, runtime)
    plan({**state, "results": [refund]}, runtime)
    first, replan = model.seen_text
    assert "RF-5001" not in first and "none yet" in first
    assert "[step 1 refund_charge] refund_id = RF-5001" in replan


def test_a_model_answer_to_a_question_cites_its_evidence_and_is_accepted(
    settings: Settings,
) -> None:
    """A pure answer has no step to cite evidence in: it cites at the top level of the plan, and
    the validator (which refuses an answer citing nothing retrieved) accepts it. Found by the
    real-model scorecard: before, a model's answer could never pass and always escalated."""
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    question = "What is our refund window?"
    hits = CorpusStore(settings, embedder_for(settings)).query(question, 6)
    policy = next(e for e in hits if e.trust_tier == "official" and "30 days" in e.text)
    answer = {"intent": "answer_question", "steps": [], "answer": "30 days from the charge.",
              "evidence": [policy.chunk_id]}  # fmt: skip
    uncited = answer | {"evidence": []}
    model = FakeMessagesListChatModel(
        responses=[AIMessage(json.dumps(uncited)), AIMessage(json.dumps(answer))]
    )
    for app in _app(settings, model):
        done = app.run(question)
        assert done.status == "done" and done.planner.startswith("model:"), done.plan_verdict
        assert done.plan is not None and done.plan.evidence == [policy.chunk_id]
        assert "30 days" in done.answer
