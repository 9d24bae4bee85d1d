"""The meter, the price table and the budget store's arithmetic (agents/usage.py,
agents/models.py, stores/budgets.py): what a call is charged, and that a budget holds."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatResult
from pydantic import Field, ValidationError

from agents.models import BudgetExhausted, Meter, MeterEvent, payer_of
from agents.usage import (
    Amount,
    BudgetRule,
    Payer,
    Price,
    PriceTable,
    applicable,
    estimate_prompt_tokens,
    first_exceeded,
    usage_of,
)
from keel.settings import Settings
from stores.budgets import SqliteBudgets

PAYER = Payer(thread_id="t-1", user="ann", team="ops")
DAY = "2026-12-03"


class UsageModel(FakeMessagesListChatModel):
    """A fake chat model whose answers report usage (as a provider's do); it keeps the keyword
    arguments of each call, so a test sees the ``max_tokens`` the meter sent."""

    seen_kwargs: list[dict[str, Any]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen_kwargs.append(dict(kwargs))
        return super()._generate(messages, *args, **kwargs)


def _reply(text: str, usage: tuple[int, int] | None) -> AIMessage:
    if usage is None:
        return AIMessage(text)
    return AIMessage(
        text,
        usage_metadata={
            "input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": sum(usage),
        },
    )  # fmt: skip


def _store() -> SqliteBudgets:
    return SqliteBudgets(Path(tempfile.mkdtemp()) / "budgets.sqlite")


def test_the_estimate_errs_high_against_langchain_s_own_approximation() -> None:
    messages = [HumanMessage("Customer C-1001 was charged twice for invoice INV-2001. " * 20)]
    assert estimate_prompt_tokens(messages) >= count_tokens_approximately(messages)
    # Non-ASCII text costs more tokens per character: the estimate counts bytes.
    assert estimate_prompt_tokens([HumanMessage("払い戻し" * 50)]) >= 200


def test_prices_are_per_million_tokens_and_rounded_up_to_a_micro_dollar() -> None:
    table = PriceTable(prices={"m": Price(input=0.15, output=0.6)})
    assert table.cost_micros("m", input_tokens=1_000_000, output_tokens=0) == 150_000
    assert table.cost_micros("m", input_tokens=1, output_tokens=0) == 1  # 0.15 rounds up
    assert table.cost_micros("other", input_tokens=10, output_tokens=10) is None
    guessed = PriceTable(unknown=Price(input=1, output=2))
    assert guessed.cost_micros("other", input_tokens=10, output_tokens=10) == 30


def test_a_money_budget_refuses_a_call_whose_price_is_unknown() -> None:
    rule = BudgetRule(scope="team", period="day", cost_usd=1)
    budgets = applicable([rule], PAYER, DAY)
    exceeded = first_exceeded(budgets, {}, Amount(tokens=10, calls=1, cost_micros=None))
    assert exceeded is not None and exceeded.unit == "cost"
    # A budget in tokens only does not need the price.
    tokens_only = applicable([BudgetRule(scope="team", tokens=100)], PAYER, DAY)
    assert first_exceeded(tokens_only, {}, Amount(tokens=10, calls=1, cost_micros=None)) is None


def test_a_named_budget_applies_to_its_name_only_and_periods_have_windows() -> None:
    rules = [
        BudgetRule(scope="user", name="bob", calls=1),
        BudgetRule(scope="team", period="month", calls=5),
    ]
    assert [key for _, key in applicable(rules, PAYER, DAY)] == ["team:ops:month:2026-12"]
    with pytest.raises(ValidationError, match="at least one"):
        BudgetRule(scope="team")
    with pytest.raises(ValidationError, match="lifetime"):
        BudgetRule(scope="thread", period="day", calls=1)


def test_settings_read_prices_and_budgets_as_json_or_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL_PRICES", '{"gpt-x": {"input": 0.15, "output": 0.6}}')
    monkeypatch.setenv("KEEL_BUDGETS", "- {scope: team, period: day, tokens: 1000}\n")
    s = Settings(home=Path(tempfile.mkdtemp()), _env_file=None)  # type: ignore[call-arg]
    assert s.model_prices["gpt-x"].output == 0.6
    assert s.budgets == [BudgetRule(scope="team", period="day", tokens=1000)]
    monkeypatch.setenv("KEEL_BUDGETS", '[{"scope": "galaxy", "calls": 1}]')
    with pytest.raises(ValidationError, match="budgets"):
        Settings(home=Path(tempfile.mkdtemp()), _env_file=None)  # type: ignore[call-arg]


def test_the_engine_s_user_and_team_pay_and_a_local_run_pays_as_the_settings_say() -> None:
    s = Settings(home=Path(tempfile.mkdtemp()), user="me", api_team="desk", _env_file=None)  # type: ignore[call-arg]
    assert payer_of(None, "t", s) == Payer(thread_id="t", user="me", team="desk")
    engine = {"identity": "ops", "keel_user": "ann", "is_authenticated": True}
    config = {"configurable": {"langgraph_auth_user": engine}}
    assert payer_of(config, "t", s) == Payer(thread_id="t", user="ann", team="ops")  # type: ignore[arg-type]


def test_the_meter_settles_with_the_provider_s_usage_and_sends_max_tokens() -> None:
    store = _store()
    meter = Meter(store, prices=PriceTable(prices={"m": Price(input=1, output=2)}), max_tokens=100)
    events: list[MeterEvent] = []
    meter.listeners.append(events.append)
    model = UsageModel(responses=[_reply("ok", (40, 7))])
    meter.invoke(model, [HumanMessage("hi")], model="m", role="planner", payer=PAYER)
    assert model.seen_kwargs[0]["max_tokens"] == 100
    assert [e.action for e in events] == ["reserved", "settled"]
    assert events[0].reserved.tokens == estimate_prompt_tokens([HumanMessage("hi")]) + 100
    (spend,) = store.spends(thread_id="t-1")
    assert (spend.status, spend.input_tokens, spend.output_tokens) == ("settled", 40, 7)
    assert spend.cost_micros == 40 * 1 + 7 * 2 and spend.estimated is False
    totals = store.totals(["team:ops:day:2026-12-03"]) or store.all_totals("team:ops:day:")
    assert next(iter(totals.values())) == Amount(tokens=47, calls=1, cost_micros=54)


def test_a_server_that_reports_no_usage_is_estimated_and_said_so() -> None:
    reply = _reply("a long answer " * 30, None)
    usage = usage_of(reply, prompt_estimate=12)
    assert usage.estimated and usage.input_tokens == 12 and usage.output_tokens >= 100


def test_a_call_over_budget_is_not_made_and_the_account_says_what_was_spent() -> None:
    store = _store()
    meter = Meter(store, budgets=[BudgetRule(scope="thread", tokens=300)], max_tokens=100)
    model = UsageModel(responses=[_reply("ok", (50, 50))] * 2 + [_reply("never", (1, 1))])
    meter.invoke(model, "hi", model="m", role="planner", payer=PAYER)
    meter.invoke(model, "hi", model="m", role="planner", payer=PAYER)
    with pytest.raises(BudgetExhausted) as stopped:
        meter.invoke(model, "hi", model="m", role="planner", payer=PAYER)
    assert len(model.seen_kwargs) == 2  # the third call never reached the model
    stop = stopped.value.stop
    assert stop.unit == "tokens" and stop.limit == 300 and stop.spent == 200
    assert stop.thread_tokens == 200 and stop.thread_calls == 2
    assert stop.spent_on == ["planner m: 50 in, 50 out", "planner m: 50 in, 50 out"]


def test_a_failed_call_stays_counted_at_its_reservation() -> None:
    class Down(FakeMessagesListChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise ConnectionError("refused")

    store = _store()
    meter = Meter(store, max_tokens=10)
    with pytest.raises(ConnectionError):
        meter.invoke(Down(responses=[]), "hi", model="m", role="planner", payer=PAYER)
    (spend,) = store.spends()
    assert spend.status == "failed" and spend.counted.tokens == spend.reserved_tokens


def test_a_dead_worker_s_reservation_expires_counted_and_a_late_settle_still_counts() -> None:
    store = _store()
    ask = Amount(tokens=100, calls=1, cost_micros=10)
    store.reserve("r", payer=PAYER, day=DAY, model="m", role="p", asked=ask, budgets=[],
                  ttl_s=5, now=1000.0)  # fmt: skip
    assert store.expire(now=1004.0) == 0
    assert store.expire(now=1006.0) == 1
    (spend,) = store.spends()
    assert spend.status == "expired" and spend.counted == ask
    key = "thread:t-1:lifetime:"
    assert store.totals([key])[key] == ask  # never lost
    from agents.usage import Usage

    store.settle("r", Usage(input_tokens=20, output_tokens=5, estimated=False), 3)
    assert store.totals([key])[key] == Amount(tokens=25, calls=1, cost_micros=3)
    # Settling twice changes nothing.
    store.settle("r", Usage(input_tokens=90, output_tokens=5, estimated=False), 9)
    assert store.totals([key])[key] == Amount(tokens=25, calls=1, cost_micros=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(min_value=0, max_value=2000),
    calls=st.lists(
        st.tuples(st.integers(min_value=1, max_value=400), st.floats(min_value=0, max_value=1)),
        max_size=25,
    ),
    settle_order=st.randoms(use_true_random=False),
)
def test_reserve_and_settle_never_go_over_a_budget(
    limit: int, calls: list[tuple[int, float]], settle_order: Any
) -> None:
    """Whatever the order of reservations and settlements, the counted total never exceeds the
    budget as long as each call uses no more than it reserved, and the totals always equal the
    sum of what each call counts for."""
    from agents.usage import Usage

    store = _store()
    rules = [BudgetRule(scope="team", tokens=limit, calls=12)]
    budgets = applicable(rules, PAYER, DAY)
    key = budgets[0][1]
    held: list[tuple[str, int, float]] = []
    for n, (asked, used_share) in enumerate(calls):
        granted = store.reserve(f"r{n}", payer=PAYER, day=DAY, model="m", role="p",
                                asked=Amount(tokens=asked, calls=1, cost_micros=0),
                                budgets=budgets, ttl_s=60)  # fmt: skip
        if not hasattr(granted, "unit"):
            held.append((f"r{n}", asked, used_share))
        if held and settle_order.random() < 0.5:
            rid, reserved, share = held.pop(settle_order.randrange(len(held)))
            used = int(reserved * share)
            store.settle(rid, Usage(input_tokens=used // 2, output_tokens=used - used // 2,
                                    estimated=False), 0)  # fmt: skip
        total = store.totals([key]).get(key, Amount())
        assert total.tokens <= limit and total.calls <= 12
        counted = [s.counted for s in store.spends()]
        assert total.tokens == sum(c.tokens for c in counted)
        assert total.calls == len(counted)


def test_workers_racing_on_one_team_budget_never_take_more_than_it_holds() -> None:
    """Eight connections to one file (as eight worker processes would hold), each reserving as
    fast as it can: BEGIN IMMEDIATE makes each check-and-write one step."""
    path = Path(tempfile.mkdtemp()) / "budgets.sqlite"
    rules = [BudgetRule(scope="team", tokens=10_000)]
    granted: list[int] = []
    # The file is made (WAL switched on) first: eight first opens racing to set the journal mode
    # can fail with "database is locked" (SQLite's busy handler does not cover that switch).
    SqliteBudgets(path).totals([])

    def worker(w: int) -> None:
        store = SqliteBudgets(path)
        for n in range(40):
            payer = Payer(thread_id=f"t-{w}-{n}", user=f"u{w}", team="ops")
            got = store.reserve(f"{w}-{n}", payer=payer, day=DAY, model="m", role="p",
                                asked=Amount(tokens=97, calls=1), ttl_s=60,
                                budgets=applicable(rules, payer, DAY))  # fmt: skip
            if not hasattr(got, "unit"):
                granted.append(97)
        store.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = SqliteBudgets(path).totals(["team:ops:lifetime:"])["team:ops:lifetime:"]
    assert total.tokens == sum(granted) <= 10_000
    assert sum(granted) > 10_000 - 97  # and the budget was used up, not refused early
