"""The budget store: every model call's reservation and spend, and the running totals budgets
are checked against, shared by every worker that uses the same store.

A call reserves its worst case before it is made, in one transaction that adds it to every total
only when each budget still holds with it, and is settled after it by what it really used; a
dead worker's reservation expires and stays counted at its worst case. How reservations, expiry
and settlement work: ``docs/budgets.md``.

SQLite here (``HOME/budgets.sqlite``, beside the intent ledger; ``BEGIN IMMEDIATE`` serializes
every process on the machine); PostgreSQL in :mod:`stores.budgets_postgres` (row locks on the
totals, in a fixed order). Both share the arithmetic below.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.usage import Amount, BudgetRule, Exceeded, Payer, Usage, counter_keys, first_exceeded
from stores.sqlitefile import SqliteFile

SpendStatus = Literal["held", "settled", "expired", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_spend (
    id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, user_id TEXT NOT NULL, team_id TEXT NOT NULL,
    model TEXT NOT NULL, role TEXT NOT NULL, day TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, status TEXT NOT NULL, keys TEXT NOT NULL,
    reserved_tokens INTEGER NOT NULL, reserved_cost INTEGER,
    input_tokens INTEGER, output_tokens INTEGER, cost INTEGER, estimated INTEGER,
    settled_at REAL, note TEXT
);
CREATE INDEX IF NOT EXISTS budget_spend_thread ON budget_spend (thread_id);
CREATE INDEX IF NOT EXISTS budget_spend_held ON budget_spend (status, expires_at);
CREATE TABLE IF NOT EXISTS budget_totals (
    key TEXT PRIMARY KEY, tokens INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0,
    cost INTEGER NOT NULL DEFAULT 0
);
"""

_COLUMNS = (
    "id, thread_id, user_id, team_id, model, role, day, created_at, expires_at, status, keys, "
    "reserved_tokens, reserved_cost, input_tokens, output_tokens, cost, estimated, settled_at, note"
)


class Spend(BaseModel):
    """One model call as the store holds it: its reservation and, once settled, its usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    thread_id: str
    user: str
    team: str
    model: str
    role: str
    day: str
    created_at: float
    expires_at: float
    status: SpendStatus
    reserved_tokens: int
    reserved_cost_micros: int | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_micros: int | None = None
    estimated: bool | None = None
    note: str | None = None

    @property
    def counted(self) -> Amount:
        """What this call counts for in the totals now."""
        if self.status == "settled":
            return Amount(
                tokens=(self.input_tokens or 0) + (self.output_tokens or 0),
                calls=1,
                cost_micros=self.cost_micros,
            )
        return Amount(tokens=self.reserved_tokens, calls=1, cost_micros=self.reserved_cost_micros)


class Reservation(BaseModel):
    """A reservation the store granted: settle it with :meth:`Budgets.settle`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    amount: Amount
    keys: list[str] = Field(description="the totals it was added to")


class Cursor(Protocol):
    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...


class Budgets(ABC):
    """Reservations, spend and running totals; one implementation per database."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Conn]:
        """A transaction in which the totals read are locked until commit."""

    @abstractmethod
    def _lock_totals(self, conn: Conn, keys: Sequence[str]) -> None:
        """Make the totals ``keys`` exist and lock them (in key order) for the transaction."""

    placeholder = "?"

    def close(self) -> None:  # noqa: B027 (a store with nothing to release keeps this)
        """Release the store's connections."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def reserve(
        self,
        reservation_id: str,
        *,
        payer: Payer,
        day: str,
        model: str,
        role: str,
        asked: Amount,
        budgets: Sequence[tuple[BudgetRule, str]],
        ttl_s: float,
        now: float | None = None,
    ) -> Reservation | Exceeded:
        """Reserve ``asked`` for one call, or say which budget it would exceed (nothing held).

        Every total the payer adds to on ``day`` is locked and read, checked against
        ``budgets`` (from :func:`agents.usage.applicable`), and, when all hold, the reservation
        is written and added to each total, in one transaction.
        """
        now = time.time() if now is None else now
        keys = counter_keys(payer, day)
        cost = asked.cost_micros
        with self._transaction() as conn:
            self._expire(conn, now)
            self._lock_totals(conn, keys)
            totals = self._totals(conn, keys)
            exceeded = first_exceeded(budgets, totals, asked)
            if exceeded is not None:
                return exceeded
            conn.execute(
                self._sql(
                    "INSERT INTO budget_spend (id, thread_id, user_id, team_id, model, role, day,"
                    " created_at, expires_at, status, keys, reserved_tokens, reserved_cost)"
                    " VALUES (?,?,?,?,?,?,?,?,?,'held',?,?,?)"
                ),
                (
                    reservation_id, payer.thread_id, payer.user, payer.team, model, role, day,
                    now, now + ttl_s, json.dumps(keys), asked.tokens, cost,
                ),
            )  # fmt: skip
            self._add(conn, keys, asked.tokens, asked.calls, cost or 0)
        return Reservation(id=reservation_id, amount=asked, keys=keys)

    def settle(
        self,
        reservation_id: str,
        usage: Usage | None,
        cost_micros: int | None,
        *,
        note: str | None = None,
        now: float | None = None,
    ) -> Spend | None:
        """Replace a reservation by what the call used (``usage`` None: the call failed, and it
        stays counted at its reservation). A reservation already settled is left as it is.

        Returns the call as settled, or None when there is no such reservation.
        """
        now = time.time() if now is None else now
        with self._transaction() as conn:
            rows = conn.execute(
                self._sql(f"SELECT {_COLUMNS} FROM budget_spend WHERE id = ?"), (reservation_id,)
            ).fetchall()
            if not rows:
                return None
            held = _spend(rows[0])
            if held.status == "settled":
                return held
            if usage is None:
                conn.execute(
                    self._sql(
                        "UPDATE budget_spend SET status = 'failed', settled_at = ?, note = ?"
                        " WHERE id = ?"
                    ),
                    (now, note, reservation_id),
                )
                return held.model_copy(update={"status": "failed", "note": note})
            keys = json.loads(rows[0][10])
            self._lock_totals(conn, keys)
            conn.execute(
                self._sql(
                    "UPDATE budget_spend SET status = 'settled', input_tokens = ?,"
                    " output_tokens = ?, cost = ?, estimated = ?, settled_at = ?, note = ?"
                    " WHERE id = ?"
                ),
                (
                    usage.input_tokens, usage.output_tokens, cost_micros, int(usage.estimated),
                    now, note, reservation_id,
                ),
            )  # fmt: skip
            self._add(
                conn,
                keys,
                usage.tokens - held.reserved_tokens,
                0,
                (cost_micros or 0) - (held.reserved_cost_micros or 0),
            )
        return held.model_copy(
            update={
                "status": "settled", "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens, "cost_micros": cost_micros,
                "estimated": usage.estimated, "note": note,
            }
        )  # fmt: skip

    def expire(self, now: float | None = None) -> int:
        """Mark reservations whose lease ran out ``expired`` (they stay counted at their
        reservation); how many were."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            return self._expire(conn, now)

    def _expire(self, conn: Conn, now: float) -> int:
        cursor = conn.execute(
            self._sql(
                "UPDATE budget_spend SET status = 'expired', settled_at = ?,"
                " note = 'the worker did not settle it in time: counted at its reservation'"
                " WHERE status = 'held' AND expires_at < ?"
            ),
            (now, now),
        )
        return int(getattr(cursor, "rowcount", 0) or 0)

    def totals(self, keys: Sequence[str]) -> dict[str, Amount]:
        """The running totals of ``keys`` (a key never written is absent)."""
        with self._transaction() as conn:
            return self._totals(conn, keys)

    def all_totals(self, prefix: str = "") -> dict[str, Amount]:
        """Every running total whose key starts with ``prefix`` (``team:keel:``)."""
        with self._transaction() as conn:
            rows = conn.execute(
                self._sql(
                    "SELECT key, tokens, calls, cost FROM budget_totals WHERE substr(key, 1, ?) = ?"
                ),
                (len(prefix), prefix),
            ).fetchall()
        return {k: Amount(tokens=t, calls=c, cost_micros=m) for k, t, c, m in rows}

    def spends(
        self, *, thread_id: str | None = None, user: str | None = None, team: str | None = None
    ) -> list[Spend]:
        """The calls of a thread, a user or a team (all of them when none is named), oldest
        first."""
        where, params = [], []
        for column, value in (("thread_id", thread_id), ("user_id", user), ("team_id", team)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM budget_spend"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._transaction() as conn:
            rows = conn.execute(self._sql(sql + " ORDER BY created_at, id"), tuple(params))
            return [_spend(r) for r in rows.fetchall()]

    def _totals(self, conn: Conn, keys: Sequence[str]) -> dict[str, Amount]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = conn.execute(
            self._sql(f"SELECT key, tokens, calls, cost FROM budget_totals WHERE key IN ({marks})"),
            tuple(keys),
        ).fetchall()
        return {k: Amount(tokens=t, calls=c, cost_micros=m) for k, t, c, m in rows}

    def _add(self, conn: Conn, keys: Sequence[str], tokens: int, calls: int, cost: int) -> None:
        for key in keys:
            conn.execute(
                self._sql(
                    "UPDATE budget_totals SET tokens = tokens + ?, calls = calls + ?,"
                    " cost = cost + ? WHERE key = ?"
                ),
                (tokens, calls, cost, key),
            )


def _spend(row: Sequence[Any]) -> Spend:
    (
        id_, thread_id, user, team, model, role, day, created_at, expires_at, status, _keys,
        reserved_tokens, reserved_cost, input_tokens, output_tokens, cost, estimated, _settled,
        note,
    ) = row  # fmt: skip
    return Spend(
        id=id_, thread_id=thread_id, user=user, team=team, model=model, role=role, day=day,
        created_at=float(created_at), expires_at=float(expires_at), status=status,
        reserved_tokens=reserved_tokens, reserved_cost_micros=reserved_cost,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_micros=cost,
        estimated=None if estimated is None else bool(estimated), note=note,
    )  # fmt: skip


class SqliteBudgets(Budgets):
    """The budget store in a SQLite file (``HOME/budgets.sqlite``).

    Every transaction is ``BEGIN IMMEDIATE``: it holds the file's write lock from its first
    read, so a reservation's check and its write cannot interleave with another process's.

    Example:
        >>> import tempfile
        >>> from agents.usage import applicable
        >>> store = SqliteBudgets(Path(tempfile.mkdtemp()) / "budgets.sqlite")
        >>> payer = Payer(thread_id="t-1", user="ann", team="keel")
        >>> rules = applicable([BudgetRule(scope="thread", tokens=100)], payer, "2026-12-03")
        >>> ask = Amount(tokens=80, calls=1)
        >>> r = store.reserve("r1", payer=payer, day="2026-12-03", model="m", role="planner",
        ...                   asked=ask, budgets=rules, ttl_s=60)
        >>> store.reserve("r2", payer=payer, day="2026-12-03", model="m", role="planner",
        ...               asked=ask, budgets=rules, ttl_s=60).unit
        'tokens'
        >>> store.settle("r1", Usage(input_tokens=30, output_tokens=10, estimated=False), 0).status
        'settled'
        >>> store.totals(["thread:t-1:lifetime:"])["thread:t-1:lifetime:"].tokens
        40
    """

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "NORMAL") -> None:
        self.path = path
        self._file = SqliteFile(path, schema=SCHEMA, synchronous=synchronous)

    def _transaction(self) -> AbstractContextManager[Conn]:
        return self._file.transaction()

    def _lock_totals(self, conn: Conn, keys: Sequence[str]) -> None:
        # BEGIN IMMEDIATE already holds the write lock: making the rows is all that is left.
        for key in keys:
            conn.execute("INSERT OR IGNORE INTO budget_totals (key) VALUES (?)", (key,))

    def close(self) -> None:
        self._file.close()


def iter_keys(totals: dict[str, Amount]) -> Iterator[tuple[str, str, str, str, Amount]]:
    """Each total as (scope, who, period, window, amount)."""
    for key, amount in sorted(totals.items()):
        scope, rest = key.split(":", 1)
        who, period, window = rest.rsplit(":", 2)
        yield scope, who, period, window, amount


class UsageRow(BaseModel):
    """One running total, with the budgets that apply to it and what is left of each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str
    who: str
    period: str
    window: str = Field(description="the day or month (UTC); empty for a lifetime")
    tokens: int
    calls: int
    cost_usd: float
    budgets: list[dict[str, Any]] = Field(
        default_factory=list, description="each budget on this total: its limits and what is left"
    )


def usage_rows(
    store: Budgets,
    rules: Sequence[BudgetRule],
    *,
    scope: str | None = None,
    who: str | None = None,
    period: str | None = None,
) -> list[UsageRow]:
    """The running totals (spend settled, plus reservations held, each at its reservation),
    filtered by scope, name and period, with the budgets that apply to each.

    Example:
        >>> import tempfile
        >>> store = SqliteBudgets(Path(tempfile.mkdtemp()) / "b.sqlite")
        >>> usage_rows(store, [])
        []
    """
    prefix = f"{scope}:" if scope else ""
    if scope and who:
        prefix += f"{who}:"
    rows = []
    for s, w, p, window, amount in iter_keys(store.all_totals(prefix)):
        if (who is not None and w != who) or (period is not None and p != period):
            continue
        budgets = [
            {"budget": rule.describe(), **_left(rule, amount)}
            for rule in rules
            if rule.scope == s and rule.period == p and rule.applies_to(w)
        ]
        rows.append(
            UsageRow(
                scope=s, who=w, period=p, window=window, tokens=amount.tokens,
                calls=amount.calls, cost_usd=(amount.cost_micros or 0) / 1_000_000,
                budgets=budgets,
            )
        )  # fmt: skip
    return rows


class ThreadSpend(BaseModel):
    """What one thread has spent on models (held reservations at their worst case) and what is
    left of each budget on it: ``keel show``'s spend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int
    calls: int
    cost_usd: float | None = Field(description="None when a call of the thread had no price")
    held: int = Field(description="reservations not settled yet")
    budgets: list[dict[str, Any]] = Field(
        default_factory=list, description="each budget on the thread: its limits and what is left"
    )

    def describe(self) -> str:
        money = f", ${self.cost_usd:.6f}" if self.cost_usd is not None else ""
        held = f" ({self.held} held at their worst case)" if self.held else ""
        lines = [f"spend: {self.tokens} tokens, {self.calls} calls{money}{held}"]
        for b in self.budgets:
            left = ", ".join(
                f"{v} {k.removesuffix('_left')}" for k, v in b.items() if k != "budget"
            )
            lines.append(f"  {b['budget']}: left {left}")
        return "\n".join(lines)


def thread_spend(store: Budgets, rules: Sequence[BudgetRule], thread_id: str) -> ThreadSpend:
    """The thread's spend, from its calls in ``store``, and what each budget on it has left.

    Example:
        >>> import tempfile
        >>> store = SqliteBudgets(Path(tempfile.mkdtemp()) / "b.sqlite")
        >>> print(thread_spend(store, [BudgetRule(scope="thread", calls=3)], "t-1").describe())
        spend: 0 tokens, 0 calls, $0.000000
          thread budget (each thread, lifetime): 3 calls: left 3 calls
    """
    calls = store.spends(thread_id=thread_id)
    counted = [c.counted for c in calls]
    costs = [a.cost_micros for a in counted]
    spent = Amount(
        tokens=sum(a.tokens for a in counted),
        calls=len(counted),
        cost_micros=None if None in costs else sum(c or 0 for c in costs),
    )
    return ThreadSpend(
        tokens=spent.tokens,
        calls=spent.calls,
        cost_usd=None if spent.cost_micros is None else spent.cost_micros / 1_000_000,
        held=sum(c.status == "held" for c in calls),
        budgets=[
            {"budget": rule.describe(), **_left(rule, spent)}
            for rule in rules
            if rule.scope == "thread" and rule.applies_to(thread_id)
        ],
    )


def _left(rule: BudgetRule, spent: Amount) -> dict[str, int]:
    return {
        f"{unit}_left": limit - used
        for unit, limit, used in (
            ("tokens", rule.tokens, spent.tokens),
            ("calls", rule.calls, spent.calls),
            ("cost_micros", rule.cost_micros, spent.cost_micros or 0),
        )
        if limit is not None
    }
