"""The model boundary: chat models per role, and the meter every model call goes through.

``chat_model_for`` makes a ``ChatOpenAI`` (OpenAI or any OpenAI-compatible server).
``langchain-openai`` (with ``openai`` and ``tiktoken``, about two seconds of a cold start) loads
when the first model is made, not with this module: the runbook planner's commands, and every
command that only reads or answers a thread, never need it.

:class:`Meter` is the one place a model is called from: it reserves the call's worst case
against every budget that applies (the thread's, the user's, the team's), makes the call with
``max_tokens`` set to what it reserved, and settles the reservation with the usage the provider
reports (or an estimate, said to be one). A call that would exceed a budget is not made:
:class:`BudgetExhausted` says which budget and what was spent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from pydantic import BaseModel, ConfigDict, Field

from agents.usage import (
    MICROS,
    Amount,
    BudgetRule,
    Exceeded,
    Payer,
    PriceTable,
    Usage,
    applicable,
    estimate_prompt_tokens,
    usage_of,
)
from graph.reviewer import AUTH_USER_KEY, reviewer_of, team_of
from graph.state import BudgetStop
from keel.errors import KeelError
from keel.settings import Settings
from stores.backends import open_stores
from stores.budgets import Budgets, Spend

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel, LanguageModelInput
    from langchain_core.runnables import Runnable


def chat_model_for(
    settings: Settings,
    model: str | None,
    *,
    callbacks: Sequence[BaseCallbackHandler] = (),
) -> BaseChatModel:
    """A ``ChatOpenAI`` with Keel's timeout and retry settings.

    The client's own retries cover 429, 5xx and connection errors; Keel's fallback model and the
    runbook planner cover what is left. ``callbacks`` see every call the model makes, wherever
    it is made from (the real-model scorecard counts calls and tokens with them).
    """
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model or "gpt-4o-mini",
        api_key=settings.openai_api_key or "not-needed-for-a-local-server",  # type: ignore[arg-type]
        base_url=settings.openai_base_url,
        timeout=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
        temperature=0,
        callbacks=list(callbacks) or None,
    )


def model_name(model: Any) -> str:
    """A chat model's name, as prices and plans name it."""
    return str(
        getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    )


class MeterEvent(BaseModel):
    """What the meter did for one call: reserved, refused, settled, or failed (the call raised;
    it stays counted at its reservation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["reserved", "refused", "settled", "failed"]
    reservation_id: str
    model: str
    role: str
    payer: Payer
    reserved: Amount
    budgets: list[str] = Field(default_factory=list, description="the totals checked")
    usage: Usage | None = None
    cost_micros: int | None = None
    refused_by: str | None = None
    note: str | None = None
    overhead_ms: float = Field(default=0.0, description="the meter's own time, the call excluded")


class BudgetExhausted(KeelError):
    """A model call a budget refused: it was not made. ``stop`` is the account."""

    def __init__(self, stop: BudgetStop) -> None:
        super().__init__(stop.describe())
        self.stop = stop


MeterListener = Callable[[MeterEvent], None]


class Meter:
    """Reserves, calls, settles: the one door to a chat model.

    Args:
        store: where reservations and spend live (shared by every worker using it); None
            meters nothing durable and enforces no budget (a replay).
        prices: the price table.
        budgets: the budgets that apply (each to its scope, period and name).
        max_tokens: the most output tokens a call may produce (sent as ``max_tokens``).
        ttl_s: a reservation left unsettled this long is a dead worker's.
        clock: the time source for a call's day (budgets per day and month are UTC).

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> import tempfile; from pathlib import Path
        >>> from stores.budgets import SqliteBudgets
        >>> store = SqliteBudgets(Path(tempfile.mkdtemp()) / "budgets.sqlite")
        >>> meter = Meter(store, budgets=[BudgetRule(scope="thread", calls=1)])
        >>> payer = Payer(thread_id="t-1", user="ann", team="keel")
        >>> meter.invoke(FakeListChatModel(responses=["hi"]), "hello", model="m",
        ...              role="planner", payer=payer).content
        'hi'
        >>> meter.invoke(FakeListChatModel(responses=["hi"]), "hello", model="m",
        ...              role="planner", payer=payer)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        agents.models.BudgetExhausted: thread budget (each thread, lifetime): 1 calls would be ...
    """

    def __init__(
        self,
        store: Budgets | None,
        *,
        prices: PriceTable | None = None,
        budgets: Sequence[BudgetRule] = (),
        max_tokens: int = 2048,
        ttl_s: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.prices = prices or PriceTable()
        self.budgets = list(budgets)
        self.max_tokens = max_tokens
        self.ttl_s = ttl_s
        self.clock = clock
        self.listeners: list[MeterListener] = []

    def invoke(
        self,
        runnable: Runnable[LanguageModelInput, BaseMessage],
        messages: LanguageModelInput,
        *,
        model: str,
        role: str,
        payer: Payer,
        tools: Sequence[Any] = (),
        config: RunnableConfig | None = None,
    ) -> BaseMessage:
        """Call ``runnable`` with ``messages`` if every budget that applies can take its worst case.

        Args:
            runnable: the chat model, as bound for this call (tools, tags).
            messages: the prompt.
            model: the model's name (its price).
            role: the agent calling (the flight record and ``keel usage`` show it).
            payer: the thread, user and team it is charged to.
            tools: the tool schemas bound to ``runnable`` (their tokens are part of the prompt).
            config: the run's config, passed on to the call.

        Raises:
            BudgetExhausted: a budget would be exceeded; the call was not made.
            Exception: whatever the call raised (it stays counted at its reservation).
        """
        started = time.perf_counter()
        prompt = messages if isinstance(messages, list) else [messages]
        estimate = estimate_prompt_tokens(prompt, tools)
        asked = Amount(
            tokens=estimate + self.max_tokens,
            calls=1,
            cost_micros=self.prices.cost_micros(
                model, input_tokens=estimate, output_tokens=self.max_tokens
            ),
        )
        day = self.clock().astimezone(UTC).date().isoformat()
        budgets = applicable(self.budgets, payer, day)
        keys = [key for _, key in budgets]
        rid = f"call-{uuid.uuid4().hex}"
        event = MeterEvent(
            action="reserved", reservation_id=rid, model=model, role=role, payer=payer,
            reserved=asked, budgets=keys,
        )  # fmt: skip
        if self.store is not None:
            granted = self.store.reserve(
                rid, payer=payer, day=day, model=model, role=role, asked=asked, budgets=budgets,
                ttl_s=self.ttl_s,
            )  # fmt: skip
            if isinstance(granted, Exceeded):
                refused = event.model_copy(
                    update={"action": "refused", "refused_by": granted.describe(),
                            "overhead_ms": _ms(started)}
                )  # fmt: skip
                self._tell(refused)
                raise BudgetExhausted(self.stop(granted, payer, model=model, role=role))
        overhead = _ms(started)
        self._tell(event.model_copy(update={"overhead_ms": overhead}))
        metadata: dict[str, Any] = {
            "keel_reservation_id": rid, "keel_role": role, "keel_reserved_tokens": asked.tokens,
            "keel_budgets": keys, "keel_payer_user": payer.user, "keel_payer_team": payer.team,
        }  # fmt: skip
        price = self.prices.price_of(model)
        if price is not None:  # a tracer prices the call's usage with it (LangSmith's metadata)
            metadata |= {"keel_price_input": price.input, "keel_price_output": price.output}
        call_config = merge_configs(config, {"metadata": metadata})
        try:
            reply = runnable.invoke(messages, call_config, max_tokens=self.max_tokens)
        except BaseException as err:
            failed = f"the call failed ({type(err).__name__}): counted at its reservation"
            if self.store is not None:
                self.store.settle(rid, None, None, note=failed)
            self._tell(event.model_copy(update={"action": "failed", "note": failed}))
            raise
        settling = time.perf_counter()
        usage = usage_of(reply, estimate)
        cost = self.prices.cost_micros(
            model, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
        )
        note: str | None = None
        if usage.tokens > asked.tokens:
            note = f"used {usage.tokens} tokens, more than the {asked.tokens} reserved"
        if self.store is not None:
            self.store.settle(rid, usage, cost, note=note)
        overhead += _ms(settling)
        self._tell(
            event.model_copy(
                update={"action": "settled", "usage": usage, "cost_micros": cost, "note": note,
                        "overhead_ms": round(overhead, 3)}
            )
        )  # fmt: skip
        return reply

    def stop(self, exceeded: Exceeded, payer: Payer, *, model: str, role: str) -> BudgetStop:
        """The account of a refused call: the budget, and what the thread had spent on what."""
        spends = self.store.spends(thread_id=payer.thread_id) if self.store is not None else []
        costs = [s.counted.cost_micros for s in spends]
        return BudgetStop(
            budget=exceeded.budget.describe(),
            unit=exceeded.unit,
            limit=exceeded.limit,
            spent=exceeded.spent,
            asked=exceeded.asked,
            model=model,
            role=role,
            thread_tokens=sum(s.counted.tokens for s in spends),
            thread_calls=len(spends),
            thread_cost_usd=(
                sum(c for c in costs if c is not None) / MICROS
                if spends and all(c is not None for c in costs)
                else None
            ),
            spent_on=[describe_spend(s) for s in spends],
        )

    def _tell(self, event: MeterEvent) -> None:
        for listener in self.listeners:
            listener(event)


def describe_spend(spend: Spend) -> str:
    """One line for one call: role, model, tokens in and out (or reserved), cost, status."""
    cost = spend.counted.cost_micros
    money = f", ${cost / MICROS:.6f}" if cost is not None else ""
    if spend.status == "settled":
        guessed = " (estimated)" if spend.estimated else ""
        return (
            f"{spend.role} {spend.model}: {spend.input_tokens} in, {spend.output_tokens} out"
            f"{guessed}{money}"
        )
    return f"{spend.role} {spend.model}: {spend.status}, {spend.reserved_tokens} reserved{money}"


def payer_of(config: RunnableConfig | None, thread_id: str, settings: Settings) -> Payer:
    """Who a run's model calls are charged to.

    Behind a serving engine: its authenticated user (``keel_user``, else ``identity``) and that
    user's team (the ``identity`` Keel's auth hook sets, else ``KEEL_API_TEAM``). With no engine:
    ``KEEL_USER`` and ``KEEL_API_TEAM``.

    Example:
        >>> from pathlib import Path
        >>> s = Settings(home=Path("/tmp/keel-doc"), user="me")
        >>> payer_of({"configurable": {}}, "t-1", s)
        Payer(thread_id='t-1', user='me', team='keel')
        >>> engine = {"identity": "ops", "keel_user": "ann"}
        >>> payer_of({"configurable": {"langgraph_auth_user": engine}}, "t-1", s).team
        'ops'
    """
    configurable = (config or {}).get("configurable") or {}
    if configurable.get(AUTH_USER_KEY) is None:
        return Payer(thread_id=thread_id, user=settings.user, team=settings.api_team)
    return Payer(
        thread_id=thread_id,
        user=reviewer_of(config, None).name,
        team=team_of(config) or settings.api_team,
    )


def meter_for(settings: Settings, store: Budgets | None = None) -> Meter:
    """The meter the settings describe, on ``store`` (default: the configured budgets)."""
    return Meter(
        store if store is not None else open_stores(settings).budgets,
        prices=PriceTable(prices=settings.model_prices, unknown=settings.unknown_model_price),
        budgets=settings.budgets,
        max_tokens=settings.model_max_tokens,
        ttl_s=settings.budget_reservation_ttl_s,
    )


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
