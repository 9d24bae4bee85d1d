"""The meter's cost per model call: the same instant fake model called bare and through the meter
(estimate, price, reservation and settlement in the SQLite budget store, three budgets applying).

``meter_overhead_ms`` is the median of metered minus the median of bare (target under 1 ms);
``meter_own_p95_ms`` is the meter's own time as it reports it (the call excluded).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agents.models import Meter, MeterEvent
from agents.usage import BudgetRule, Payer, Price, PriceTable
from keel.settings import Settings
from stores.budgets import SqliteBudgets


def bench_meter(settings: Settings, calls: int = 400) -> dict[str, Any]:
    reply = AIMessage(
        '{"intent": "x", "steps": []}',
        usage_metadata={"input_tokens": 900, "output_tokens": 40, "total_tokens": 940},
    )
    prompt = [SystemMessage("You plan. " * 200), HumanMessage("Refund the duplicate " * 40)]
    with tempfile.TemporaryDirectory(prefix="keel-bench-meter-") as scratch:
        store = SqliteBudgets(Path(scratch) / "budgets.sqlite", synchronous="NORMAL")
        meter = Meter(
            store,
            prices=PriceTable(prices={"m": Price(input=0.15, output=0.6)}),
            budgets=[
                BudgetRule(scope="thread", tokens=10**12),
                BudgetRule(scope="user", period="day", calls=10**9),
                BudgetRule(scope="team", period="month", cost_usd=10**6),
            ],
        )
        own: list[float] = []
        meter.listeners.append(lambda e: _own(e, own))
        model = FakeMessagesListChatModel(responses=[reply])
        bare, metered = [], []
        for n in range(calls + 20):
            payer = Payer(thread_id=f"t-{n % 50}", user="ann", team="ops")
            started = time.perf_counter()
            model.invoke(prompt)
            middle = time.perf_counter()
            meter.invoke(model, prompt, model="m", role="planner", payer=payer)
            ended = time.perf_counter()
            if n >= 20:  # warm-up left out
                bare.append((middle - started) * 1000)
                metered.append((ended - middle) * 1000)
        store.close()
    own.sort()
    return {
        "calls": calls,
        "store": "sqlite (synchronous=NORMAL)",
        "bare_median_ms": round(statistics.median(bare), 3),
        "metered_median_ms": round(statistics.median(metered), 3),
        "meter_overhead_ms": round(statistics.median(metered) - statistics.median(bare), 3),
        "meter_own_median_ms": round(statistics.median(own), 3),
        "meter_own_p95_ms": round(own[int(len(own) * 0.95) - 1], 3),
    }


def _own(event: MeterEvent, into: list[float]) -> None:
    if event.action == "settled":
        into.append(event.overhead_ms)
