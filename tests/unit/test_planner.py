"""The runbook planner and the model planner (driven by langchain-core's fake chat models)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from agents.planner import model_plan, runbook_plan
from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from graph.state import CannotPlan, Plan
from tests.builders import REFUND_RECORDS, evidence, policy
from tools.spec import ToolRegistry

REQUEST = "Customer C-1001 was charged twice for invoice INV-2001, please refund it"
ENTITIES = {"customer_id": "C-1001", "invoice_id": "INV-2001"}


def test_runbook_refunds_exactly_the_duplicate() -> None:
    result = runbook_plan(REQUEST, ENTITIES, [evidence()], REFUND_RECORDS, SupportDesk())
    assert isinstance(result, Plan)
    assert [s.tool for s in result.steps] == ["refund_charge", "send_email"]
    assert result.steps[0].args["charge_id"] == "CH-3002"
    assert result.steps[0].args["amount"] == 49.0
    assert result.steps[1].args["to"] == "ada@example.com"
    assert result.planner == "runbook"


def test_runbook_needs_the_entities_it_requires() -> None:
    result = runbook_plan("I was charged twice", {}, [evidence()], {}, SupportDesk())
    assert isinstance(result, CannotPlan)


def test_no_duplicate_no_refund() -> None:
    records = {**REFUND_RECORDS, "charges": {"invoice_id": "INV-2001", "charges": []}}
    result = runbook_plan(REQUEST, ENTITIES, [evidence()], records, SupportDesk())
    assert isinstance(result, CannotPlan)
    assert "no duplicate" in result.reason


def test_a_question_is_answered_from_the_most_trusted_source() -> None:
    wiki = policy(
        chunk_id="wiki:1",
        trust_tier="wiki",
        score=0.9,
        text="In my experience we allow refunds for about 90 days",
    )
    official = policy(score=0.5)
    result = runbook_plan("What is our refund window?", {}, [wiki, official], {}, SupportDesk())
    assert isinstance(result, Plan)
    assert result.steps == []
    assert result.answer is not None and "30 days" in result.answer
    assert result.evidence == [official.chunk_id]


def test_an_uncovered_request_cannot_be_planned() -> None:
    result = runbook_plan(
        "Export every customer's e-mail address", {}, [policy(score=0.2)], {}, SupportDesk()
    )
    assert isinstance(result, CannotPlan)


def _tools(tmp_path: Any) -> Any:
    backend = DemoBackend(tmp_path / "demo.sqlite")
    backend.seed()
    return ToolRegistry(demo_tools(backend))


def _plan(model: Any, tmp_path: Any, repair_attempts: int) -> Plan | CannotPlan:
    return model_plan(
        model, REQUEST, ENTITIES, REFUND_RECORDS, [evidence()], _tools(tmp_path), [],
        repair_attempts=repair_attempts,
    )  # fmt: skip


def _reply(payload: dict[str, Any]) -> AIMessage:
    return AIMessage(content="```json\n" + json.dumps(payload) + "\n```")


PLAN_JSON = {
    "intent": "refund_duplicate_charge",
    "steps": [
        {
            "tool": "refund_charge",
            "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"},
            "purpose": "refund the duplicate",
            "evidence": ["runbook-duplicate-charge:abc"],
        }
    ],
    "answer": None,
    "cannot_plan": None,
}


def test_model_plan_takes_effects_from_the_tool_specs(tmp_path: Any) -> None:
    # Fake model at the model boundary: langchain-core's FakeMessagesListChatModel.
    model = FakeMessagesListChatModel(responses=[_reply(PLAN_JSON)])
    result = _plan(model, tmp_path, 1)
    assert isinstance(result, Plan)
    assert result.planner.startswith("model:")
    assert result.steps[0].effect == "irreversible"


def test_model_plan_repairs_a_malformed_answer_once(tmp_path: Any) -> None:
    model = FakeMessagesListChatModel(
        responses=[AIMessage(content="Sure! Here is the plan: refund it."), _reply(PLAN_JSON)]
    )
    result = _plan(model, tmp_path, 1)
    assert isinstance(result, Plan)


def test_model_plan_gives_up_after_the_repair_budget(tmp_path: Any) -> None:
    model = FakeMessagesListChatModel(responses=[AIMessage(content="no"), AIMessage(content="{")])
    with pytest.raises(ValueError, match="no valid plan after 2 answers"):
        _plan(model, tmp_path, 1)


def test_model_plan_refuses_smuggled_fields(tmp_path: Any) -> None:
    smuggled = {**PLAN_JSON, "approved": True}
    model = FakeMessagesListChatModel(responses=[_reply(smuggled), _reply(smuggled)])
    with pytest.raises(ValueError):
        _plan(model, tmp_path, 1)


def test_an_unknown_tool_is_treated_as_irreversible(tmp_path: Any) -> None:
    bad = {**PLAN_JSON, "steps": [{**PLAN_JSON["steps"][0], "tool": "wire_money"}]}  # type: ignore[index]
    model = FakeMessagesListChatModel(responses=[_reply(bad)])
    result = _plan(model, tmp_path, 0)
    assert isinstance(result, Plan)
    assert result.steps[0].effect == "irreversible"


def test_model_can_decline(tmp_path: Any) -> None:
    declined = {"intent": "export", "steps": [], "cannot_plan": "bulk exports are forbidden"}
    model = FakeMessagesListChatModel(responses=[_reply(declined)])
    result = model_plan(model, "export all", {}, {}, [], _tools(tmp_path), [], repair_attempts=0)
    assert isinstance(result, CannotPlan)
    assert result.reason == "bulk exports are forbidden"


# -- the plan as a tool call --------------------------------------------------------------------


class ToolCallingFake(FakeMessagesListChatModel):
    """langchain-core's list fake plus ``bind_tools``, keeping what was bound and every prompt."""

    bound: list[dict[str, Any]] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        schemas = [convert_to_openai_tool(t) for t in tools]
        self.bound.append({"tools": schemas, "tool_choice": tool_choice})
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _called(args: dict[str, Any], call_id: str = "call_1") -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": "submit_plan", "args": args, "id": call_id}])


def test_the_planner_asks_for_its_plan_as_a_submit_plan_tool_call(tmp_path: Any) -> None:
    model = ToolCallingFake(responses=[_called(PLAN_JSON)])
    result = _plan(model, tmp_path, 0)
    assert isinstance(result, Plan) and result.steps[0].args["charge_id"] == "CH-3002"
    [bound] = model.bound
    assert bound["tool_choice"] == "submit_plan"
    [tool] = bound["tools"]
    assert tool["function"]["name"] == "submit_plan"
    params = tool["function"]["parameters"]
    assert {"intent", "steps"} <= set(params["properties"])  # the schema is PlanDraft's


def test_a_tool_calling_model_that_answers_in_text_is_still_read(tmp_path: Any) -> None:
    model = ToolCallingFake(responses=[_reply(PLAN_JSON)])
    assert isinstance(_plan(model, tmp_path, 0), Plan)


@pytest.mark.parametrize(
    "malformed",
    [
        AIMessage(content="", invalid_tool_calls=[{"name": "submit_plan", "args": '{"intent": ',
                                                   "id": "call_1", "error": "not JSON"}]),
        _called({**PLAN_JSON, "approved": True}),  # a smuggled field
        AIMessage(content="", tool_calls=[{"name": "refund_charge", "args": {}, "id": "call_1"}]),
    ],
    ids=["arguments-not-json", "schema-refused", "another-tool"],
)  # fmt: skip
def test_a_malformed_tool_call_is_repaired_like_malformed_json(
    tmp_path: Any, malformed: AIMessage
) -> None:
    model = ToolCallingFake(responses=[malformed, _called(PLAN_JSON, "call_2")])
    assert isinstance(_plan(model, tmp_path, 1), Plan)
    repair = model.prompts[1][2:]  # after the system and user messages
    assert repair[0] is malformed
    # Every tool call gets its answer (OpenAI refuses a history without one), then the repair.
    assert isinstance(repair[1], ToolMessage) and repair[1].tool_call_id == "call_1"
    assert repair[1].status == "error"
    assert isinstance(repair[2], HumanMessage) and "not a valid plan" in str(repair[2].content)


def test_a_malformed_tool_call_counts_against_the_repair_budget(tmp_path: Any) -> None:
    model = ToolCallingFake(responses=[_called({"steps": "none"})] * 2)
    with pytest.raises(ValueError, match="no valid plan after 2 answers"):
        _plan(model, tmp_path, 1)


def _data_runbook() -> tuple[Any, dict[str, Any]]:
    from agents.runbooks import runbook_steps
    from domains.support_desk import CORPUS
    from retrieval.corpus import load_manifest

    runbook = evidence(chunk_id="runbook-close-ticket:x", source="runbook-close-ticket",
                       intent="close_ticket_and_notify", keywords=["close"],
                       requires=["ticket_id"])  # fmt: skip
    return runbook, runbook_steps(load_manifest(CORPUS))


def test_a_data_runbook_is_filled_from_the_records_without_domain_code() -> None:
    runbook, data = _data_runbook()
    assert set(data) == {"runbook-billing-email", "runbook-close-ticket"}
    records = {"ticket": {"ticket_id": "T-77", "subject": "Login", "status": "open"},
               "customer": {"name": "Alan", "email": "alan@example.com"}}  # fmt: skip

    class NoCode(SupportDesk):
        def runbook_plan(self, *args: Any) -> Plan | CannotPlan:
            raise AssertionError("a data runbook needs no domain code")

    result = runbook_plan("Close ticket T-77", {"ticket_id": "T-77"}, [runbook], records,
                          NoCode(), data)  # fmt: skip
    assert isinstance(result, Plan) and result.intent == "close_ticket_and_notify"
    close, mail = result.steps
    assert close.args == {"ticket_id": "T-77", "resolution": "Resolved by the support desk"}
    assert (mail.tool, mail.effect, mail.args["to"]) == ("send_email", "irreversible",
                                                          "alan@example.com")  # fmt: skip
    assert "Dear Alan, we closed your ticket 'Login'." in mail.args["body"]
    assert mail.evidence == ["runbook-close-ticket:x"]


def test_a_data_runbook_missing_a_record_or_a_system_does_not_plan() -> None:
    runbook, data = _data_runbook()
    ticket = {"ticket": {"ticket_id": "T-77", "subject": "Login"}}
    missing = runbook_plan("Close ticket T-77", {"ticket_id": "T-77"}, [runbook], ticket,
                           SupportDesk(), data)  # fmt: skip
    assert isinstance(missing, CannotPlan) and "records[customer][email]" in missing.reason
    down = runbook_plan("Close ticket T-77", {"ticket_id": "T-77"}, [runbook],
                        {"unavailable": ["T-77: timeout"]}, SupportDesk(), data)  # fmt: skip
    assert isinstance(down, CannotPlan) and down.temporary


def test_a_step_template_may_only_index_entities_and_records() -> None:
    from agents.runbooks import fill_runbook
    from retrieval.corpus import RunbookStep

    runbook, _ = _data_runbook()
    sneaky = RunbookStep(tool="send_email", args={"to": "{records.__class__}"}, purpose="p",
                         effect="irreversible")  # fmt: skip
    result = fill_runbook(runbook, [sneaky], {}, {"records": {}})
    assert isinstance(result, CannotPlan) and "placeholder of the form" in result.reason
