"""A worker that dies mid-call: it reserves a model call's worst case through the meter, says so
on stdout, and hangs in the call until the test kills it (``test_budget_stores.py``).

Usage: ``python budget_worker.py STORE THREAD`` where STORE is a SQLite path or a PostgreSQL URL.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from agents.models import Meter
from agents.usage import BudgetRule, Payer
from stores.budgets import Budgets, SqliteBudgets
from stores.budgets_postgres import PostgresBudgets


class Hangs(FakeMessagesListChatModel):
    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        print("calling", flush=True)  # the reservation is committed: kill me now
        time.sleep(600)
        raise AssertionError("not killed")


def store_of(spec: str) -> Budgets:
    if spec.startswith("postgresql://"):
        return PostgresBudgets(spec)
    return SqliteBudgets(Path(spec))


if __name__ == "__main__":
    spec, thread = sys.argv[1], sys.argv[2]
    meter = Meter(store_of(spec), budgets=[BudgetRule(scope="team", tokens=5000)], max_tokens=1000)
    payer = Payer(thread_id=thread, user="ann", team="ops")
    meter.invoke(Hangs(responses=[]), "plan it", model="m", role="planner", payer=payer)
