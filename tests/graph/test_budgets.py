"""A thread whose model a budget stops: the free runbook planner stands in where that is safe,
else the thread escalates with an account; the flight record holds every reservation.

The model is a langchain-core fake whose answers report usage, as a provider's do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult

from agents.usage import BudgetRule, Price
from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from keel.app import KeelApp
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST


class MeteredFake(FakeMessagesListChatModel):
    """Answers with usage, and counts the calls that reached it."""

    model: str = "fake-pricey"
    reached: int = 0

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.reached += 1
        return super()._generate(messages, *args, **kwargs)


def _answer(text: str, tokens: tuple[int, int] = (900, 300)) -> AIMessage:
    return AIMessage(
        text,
        usage_metadata={"input_tokens": tokens[0], "output_tokens": tokens[1],
                        "total_tokens": sum(tokens)},
    )  # fmt: skip


def _with(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update=update)


def _app(settings: Settings, model: MeteredFake) -> Iterator[KeelApp]:
    with KeelApp.open(settings, KeelContext.from_settings(settings, planner_model=model)) as app:
        yield app


def test_a_thread_out_of_calls_is_planned_by_the_runbook_planner_and_says_why(
    settings: Settings, backend: DemoBackend
) -> None:
    """The model loops on an invalid plan; the thread's call budget stops the repairs; nothing
    was done yet, so the free runbook planner plans the refund, which still needs approval."""
    model = MeteredFake(responses=[_answer("not a plan")] * 5)
    limited = _with(settings, budgets=[BudgetRule(scope="thread", calls=2)], plan_repair_attempts=4)
    for app in _app(limited, model):
        waiting = app.run(REFUND_REQUEST)
        assert model.reached == 2  # the third (a repair) was refused before the call
        assert waiting.status == "awaiting_approval"
        assert waiting.planner == "runbook (budget exhausted)"
        stop = waiting.budget_stop
        assert stop is not None and stop.unit == "calls" and stop.limit == 2
        assert stop.thread_calls == 2 and stop.thread_tokens == 2 * 1200
        assert stop.spent_on == ["planner fake-pricey: 900 in, 300 out"] * 2
        record = app.recorder.flight_record  # type: ignore[union-attr]
        kinds = [
            (e.payload.action, e.payload.model)
            for e in record.events(record.resolve(waiting.thread_id))
            if e.kind == "budget"
        ]
        assert kinds == [("reserved", "fake-pricey"), ("settled", "fake-pricey")] * 2 + [
            ("refused", "fake-pricey")
        ]
    assert backend.refunds() == []


def test_a_thread_out_of_money_escalates_with_the_account_when_told_not_to_stand_in(
    settings: Settings,
) -> None:
    model = MeteredFake(responses=[_answer("not a plan")] * 5)
    limited = _with(
        settings,
        budgets=[BudgetRule(scope="team", period="day", cost_usd=0.001)],
        model_prices={"fake-pricey": Price(input=0.5, output=1.0)},
        budget_exhausted="escalate",
    )
    for app in _app(limited, model):
        out = app.run(REFUND_REQUEST)
        assert out.status == "escalated"
        assert model.reached == 0  # its worst case alone is over $0.001
        escalation = out.escalation
        assert escalation is not None and escalation.budget is not None
        assert escalation.budget.unit == "cost"
        assert "team budget (each team, day): $0.001" in escalation.reason
        assert "budget exhausted" in out.answer
        assert out.planner == "none (budget exhausted)"  # no runbook stood in: no plan


def test_a_request_no_runbook_covers_escalates_instead_of_being_refused(
    settings: Settings,
) -> None:
    """The runbook planner would refuse it, but the request was not refused on its merits: the
    model that could plan it was not asked. A human gets it, with the account."""
    model = MeteredFake(responses=[_answer("{}")])
    limited = _with(settings, budgets=[BudgetRule(scope="user", period="month", tokens=10)])
    for app in _app(limited, model):
        out = app.run("Please migrate our whole tenant to the new region tonight")
        assert model.reached == 0
        assert out.status == "escalated"
        assert out.escalation is not None and out.escalation.budget is not None
        assert "user budget (each user, month): 10 tokens" in out.escalation.reason
        assert "runbook planner cannot" in out.escalation.reason


def test_an_unpriced_model_is_refused_by_a_money_budget_and_allowed_by_a_token_one(
    settings: Settings,
) -> None:
    plan = json.dumps({"intent": "answer_question", "steps": [], "answer": "30 days."})
    money = _with(settings, budgets=[BudgetRule(scope="team", cost_usd=100)])
    model = MeteredFake(responses=[_answer(plan)])
    for app in _app(money, model):
        out = app.run("What is our refund window?")
        assert model.reached == 0
        assert out.budget_stop is not None and out.budget_stop.unit == "cost"
    tokens = _with(settings, budgets=[BudgetRule(scope="team", tokens=100_000)])
    model = MeteredFake(responses=[_answer(plan)])
    for app in _app(tokens, model):
        out = app.run("What is our refund window?")
        assert model.reached >= 1 and out.budget_stop is None


def test_keel_usage_shows_totals_per_scope_and_period_and_a_thread_s_calls(
    home: Any, keel: Any, monkeypatch: Any
) -> None:
    from agents.models import Meter
    from agents.usage import Payer, PriceTable
    from stores.budgets import SqliteBudgets

    monkeypatch.setenv("KEEL_BUDGETS", '[{"scope": "team", "period": "day", "tokens": 5000}]')
    store = SqliteBudgets(home / "budgets.sqlite")
    meter = Meter(store, prices=PriceTable(prices={"fake-pricey": Price(input=1, output=2)}))
    model = MeteredFake(responses=[_answer("a plan", (900, 300))])
    meter.invoke(model, "plan", model="fake-pricey", role="planner",
                 payer=Payer(thread_id="t-9", user="ann", team="ops"))  # fmt: skip
    code, out, _ = keel("usage", "--team", "ops", "--period", "day", "--json")
    assert code == 0
    (row,) = out["totals"]
    assert (row["scope"], row["who"], row["tokens"], row["calls"]) == ("team", "ops", 1200, 1)
    assert row["cost_usd"] == 0.0015
    assert row["budgets"] == [
        {"budget": "team budget (each team, day): 5000 tokens", "tokens_left": 3800}
    ]
    code, out, _ = keel("usage", "--thread", "t-9", "--json")
    assert [c["input_tokens"] for c in out["calls"]] == [900]
    code, text, _ = keel("usage", "--thread", "t-9")
    assert "thread t-9 lifetime: 1200 tokens, 1 calls, $0.001500" in text


def test_keel_show_and_explain_show_the_thread_s_spend_and_budget_events(
    settings: Settings, keel: Any, monkeypatch: Any
) -> None:
    """``keel show`` gives the thread's spend beside its budget; ``keel explain`` the record's
    reservations, settlements and the refusal that stopped the model."""
    budgets = '[{"scope": "thread", "calls": 2}]'
    monkeypatch.setenv("KEEL_BUDGETS", budgets)
    model = MeteredFake(responses=[_answer("not a plan")] * 5)
    limited = _with(settings, budgets=[BudgetRule(scope="thread", calls=2)], plan_repair_attempts=4)
    for app in _app(limited, model):
        waiting = app.run(REFUND_REQUEST)
    assert waiting.status == "awaiting_approval"

    code, shown, _ = keel("show", waiting.thread_id, "--json")
    assert code == 0
    assert shown["spend"]["tokens"] == 2400 and shown["spend"]["calls"] == 2
    assert shown["spend"]["held"] == 0
    assert shown["spend"]["budgets"] == [
        {"budget": "thread budget (each thread, lifetime): 2 calls", "calls_left": 0}
    ]
    code, text, _ = keel("show", waiting.thread_id)
    assert "spend: 2400 tokens, 2 calls" in text
    assert "thread budget (each thread, lifetime): 2 calls: left 0 calls" in text

    code, why, _ = keel("explain", waiting.thread_id, "--json")
    assert code == 0
    assert [(b["action"], b["role"]) for b in why["budget"]] == [
        ("reserved", "planner"),
        ("settled", "planner"),
    ] * 2 + [("refused", "planner")]
    assert why["budget"][1]["input_tokens"] == 900 and why["budget"][1]["output_tokens"] == 300
    assert "2 calls" in why["budget"][-1]["refused_by"]
    assert why["spend"] == {"tokens": 2400, "calls": 2, "cost_usd": None, "refused": 1}
    code, text, _ = keel("explain", waiting.thread_id)
    assert "model spend: 2400 tokens in 2 calls" in text
    assert "  refused planner fake-pricey: thread budget (each thread, lifetime)" in text
