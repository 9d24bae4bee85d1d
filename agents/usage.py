"""What a model call costs: tokens, prices, budgets and the amounts the meter reserves.

Pure data and arithmetic, no I/O: the settings validate prices and budgets with these types, the
meter (``agents.models``) computes with them, the budget store (``stores.budgets``) adds them up.

Money is counted in micro-dollars (``int``): a price in dollars per million tokens is exactly a
price in micro-dollars per token, and sums of integers never drift, so "never over the budget"
is an equality test, not a tolerance. A fraction of a micro-dollar is rounded up.

Tokens are counted by the provider (``AIMessage.usage_metadata``). Before a call, and after one
whose server reports no usage, they are estimated from characters (no tokenizer: ``tiktoken``
downloads its tables on first use). The estimate is meant to be high, not exact: one token per
three bytes of UTF-8, plus a few per message, where English runs about four characters a token.

Example:
    >>> prices = PriceTable(prices={"gpt-x": Price(input=0.15, output=0.60)})
    >>> prices.cost_micros("gpt-x", input_tokens=1000, output_tokens=500)
    450
    >>> prices.cost_micros("unknown", input_tokens=1000, output_tokens=500) is None
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BYTES_PER_TOKEN = 3
"""The estimate's divisor: lower than English's ~4 characters a token, so it errs high."""
TOKENS_PER_MESSAGE = 4
"""What a chat format adds around each message (role, separators)."""
MICROS = 1_000_000

Scope = Literal["thread", "user", "team"]
Period = Literal["lifetime", "day", "month"]
SCOPES: tuple[Scope, ...] = ("thread", "user", "team")
PERIODS: dict[Scope, tuple[Period, ...]] = {
    "thread": ("lifetime",),
    "user": ("lifetime", "day", "month"),
    "team": ("lifetime", "day", "month"),
}
"""The periods spend is counted over, per scope (a thread's lifetime is its only period)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(Strict):
    """A model's price in US dollars per million tokens."""

    input: float = Field(ge=0, description="dollars per million input (prompt) tokens")
    output: float = Field(ge=0, description="dollars per million output (completion) tokens")


class PriceTable(Strict):
    """Prices per model name; a model with none costs ``unknown`` (None: refused where money is
    counted, see :meth:`cost_micros`)."""

    prices: dict[str, Price] = Field(default_factory=dict)
    unknown: Price | None = Field(
        default=None, description="an explicit estimate for models with no price of their own"
    )

    def price_of(self, model: str) -> Price | None:
        return self.prices.get(model, self.unknown)

    def cost_micros(self, model: str, *, input_tokens: int, output_tokens: int) -> int | None:
        """The cost in micro-dollars, rounded up; None when the model has no price."""
        price = self.price_of(model)
        if price is None:
            return None
        return math.ceil(input_tokens * price.input + output_tokens * price.output - 1e-9)


class Amount(Strict):
    """Tokens, calls and money: what a reservation holds, what a call spent, what a budget allows.

    ``cost_micros`` None means not priced (a model with no price and no budget in money).
    """

    tokens: int = Field(default=0, ge=0)
    calls: int = Field(default=0, ge=0)
    cost_micros: int | None = Field(default=0, ge=0)


class BudgetRule(Strict):
    """One budget: a ceiling on what a scope may spend over a period.

    ``name`` picks one thread, user or team; unset, the rule applies to each of them on its own
    (every user gets the same daily budget). Limits left unset are not limited.

    Example:
        >>> rule = BudgetRule(scope="team", period="day", tokens=200_000, cost_usd=5)
        >>> rule.key("keel", "2026-12-03")
        'team:keel:day:2026-12-03'
    """

    scope: Scope
    period: Period = "lifetime"
    name: str | None = Field(default=None, description="one thread, user or team; unset: each")
    tokens: int | None = Field(default=None, ge=0)
    calls: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _limits(self) -> BudgetRule:
        if self.tokens is None and self.calls is None and self.cost_usd is None:
            raise ValueError("a budget needs at least one of tokens, calls, cost_usd")
        if self.period not in PERIODS[self.scope]:
            raise ValueError(f"a {self.scope} budget counts over {PERIODS[self.scope]}")
        return self

    @property
    def cost_micros(self) -> int | None:
        return None if self.cost_usd is None else round(self.cost_usd * MICROS)

    def applies_to(self, who: str) -> bool:
        return self.name is None or self.name == who

    def key(self, who: str, window: str) -> str:
        return counter_key(self.scope, who, self.period, window)

    def describe(self) -> str:
        limits = [
            f"{v} {unit}"
            for v, unit in ((self.tokens, "tokens"), (self.calls, "calls"))
            if v is not None
        ]
        if self.cost_usd is not None:
            limits.append(f"${self.cost_usd:g}")
        who = self.name or f"each {self.scope}"
        return f"{self.scope} budget ({who}, {self.period}): {', '.join(limits)}"


def counter_key(scope: Scope, who: str, period: Period, window: str) -> str:
    """The name of one running total: ``team:keel:day:2026-12-03``, ``thread:t-1:lifetime:``."""
    return f"{scope}:{who}:{period}:{window}"


class Payer(Strict):
    """Who a model call is charged to: its thread, the user who ran it and that user's team."""

    thread_id: str
    user: str
    team: str

    def who(self, scope: Scope) -> str:
        return {"thread": self.thread_id, "user": self.user, "team": self.team}[scope]


def windows(day: str) -> dict[Period, str]:
    """The window of each period a call on ``day`` (ISO date) counts in.

    Example:
        >>> windows("2026-12-03")
        {'lifetime': '', 'day': '2026-12-03', 'month': '2026-12'}
    """
    return {"lifetime": "", "day": day, "month": day[:7]}


def counter_keys(payer: Payer, day: str) -> list[str]:
    """Every running total a call by ``payer`` on ``day`` adds to, budgeted or not (so a budget
    set later sees what was spent before it)."""
    window = windows(day)
    return [
        counter_key(scope, payer.who(scope), period, window[period])
        for scope in SCOPES
        for period in PERIODS[scope]
    ]


def applicable(rules: Iterable[BudgetRule], payer: Payer, day: str) -> list[tuple[BudgetRule, str]]:
    """The budgets a call by ``payer`` on ``day`` must fit in, each with its counter's key."""
    window = windows(day)
    return [
        (rule, rule.key(payer.who(rule.scope), window[rule.period]))
        for rule in rules
        if rule.applies_to(payer.who(rule.scope))
    ]


class Exceeded(Strict):
    """The first budget a reservation would break, and by what."""

    budget: BudgetRule
    key: str
    unit: Literal["tokens", "calls", "cost"]
    limit: int
    spent: int = Field(description="settled spend plus live reservations, before this call")
    asked: int = Field(description="this call's worst case")

    def describe(self) -> str:
        if self.unit == "cost":
            return (
                f"{self.budget.describe()}: ${self.spent / MICROS:.6f} spent or held, this call "
                f"could cost ${self.asked / MICROS:.6f}, the limit is ${self.limit / MICROS:.6f}"
            )
        return (
            f"{self.budget.describe()}: {self.spent} {self.unit} spent or held, this call could "
            f"take {self.asked}, the limit is {self.limit}"
        )


def first_exceeded(
    budgets: Sequence[tuple[BudgetRule, str]],
    totals: Mapping[str, Amount],
    asked: Amount,
) -> Exceeded | None:
    """The first budget that ``asked`` on top of ``totals`` would exceed, else None.

    A budget in money with an unpriced call (``asked.cost_micros`` None) is exceeded: what a call
    costs must be known before it is allowed to spend money.

    Example:
        >>> rule = BudgetRule(scope="thread", tokens=100)
        >>> spent = {"thread:t:lifetime:": Amount(tokens=60, calls=1)}
        >>> first_exceeded([(rule, "thread:t:lifetime:")], spent, Amount(tokens=40, calls=1))
        >>> first_exceeded([(rule, "thread:t:lifetime:")], spent, Amount(tokens=41)).unit
        'tokens'
    """
    for rule, key in budgets:
        total = totals.get(key, Amount())
        checks: list[tuple[Literal["tokens", "calls", "cost"], int | None, int, int | None]] = [
            ("tokens", rule.tokens, total.tokens, asked.tokens),
            ("calls", rule.calls, total.calls, asked.calls),
            ("cost", rule.cost_micros, total.cost_micros or 0, asked.cost_micros),
        ]
        for unit, limit, spent, want in checks:
            if limit is None:
                continue
            if want is None or spent + want > limit:
                return Exceeded(
                    budget=rule, key=key, unit=unit, limit=limit, spent=spent,
                    asked=want if want is not None else 0,
                )  # fmt: skip
    return None


def estimate_text_tokens(text: str) -> int:
    """Tokens of ``text``, estimated high from its UTF-8 length.

    Example:
        >>> estimate_text_tokens("hello world")
        4
    """
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[Any], tools: Sequence[Any] = ()) -> int:
    """Tokens of a prompt (LangChain messages, and the tool schemas sent with them), estimated.

    A message's content, its tool calls' arguments and the tool schemas all count.
    """
    total = 3 + sum(TOKENS_PER_MESSAGE + estimate_text_tokens(message_text(m)) for m in messages)
    if tools:
        total += estimate_text_tokens(json.dumps(list(tools), default=str))
    return total


def message_text(message: Any) -> str:
    """The text a message costs: its content (any block form) and its tool calls."""
    content = getattr(message, "content", message)
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    calls = getattr(message, "tool_calls", None) or []
    broken = getattr(message, "invalid_tool_calls", None) or []
    if calls or broken:
        text += json.dumps(
            [{"name": c.get("name"), "args": c.get("args")} for c in [*calls, *broken]],
            default=str,
        )
    return text


class Usage(Strict):
    """What one call used: tokens in and out, and whether they were reported or estimated."""

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    estimated: bool = Field(description="the server reported no usage: Keel estimated it")

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_of(reply: Any, prompt_estimate: int) -> Usage:
    """The usage a reply reports (``usage_metadata``), else an estimate from the prompt's
    estimate and the reply's own text."""
    reported = getattr(reply, "usage_metadata", None)
    if reported and (reported.get("input_tokens") or reported.get("output_tokens")):
        return Usage(
            input_tokens=int(reported.get("input_tokens") or 0),
            output_tokens=int(reported.get("output_tokens") or 0),
            estimated=False,
        )
    return Usage(
        input_tokens=prompt_estimate,
        output_tokens=estimate_text_tokens(message_text(reply)),
        estimated=True,
    )
