"""A thread that waits for the world: a bank-transfer refund settles later, and the settlement
event, relayed from the domain's outbox, wakes the thread; nothing polls it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from keel.app import Decision, KeelApp
from keel.cli import main
from keel.settings import Settings
from stores.inbox import SqliteInbox

SEPA_REQUEST = (
    "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge"
)


def _waiting(app: KeelApp) -> str:
    outcome = app.run(SEPA_REQUEST, thread_id="t-sepa")
    outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="ann"))
    assert outcome.status == "awaiting_event"
    assert outcome.waiting is not None and outcome.waiting.event == "refund.settled"
    return outcome.waiting.key


def test_the_settlement_event_wakes_the_thread(app: KeelApp, backend: DemoBackend) -> None:
    refund_id = _waiting(app)
    assert backend.outbox() == []  # the customer is not told before the money moved
    assert app.dispatch_events() == []  # nothing happened yet: nobody is woken
    assert app.show("t-sepa").status == "awaiting_event"

    assert backend.settle_pending_refunds() == [refund_id]
    delivered = app.dispatch_events()
    assert delivered == [{"seq": 1, "type": "refund.settled", "key": refund_id, "woke": ["t-sepa"]}]
    done = app.show("t-sepa")
    assert done.status == "done"
    assert [m["recipient"] for m in backend.outbox()] == ["katherine@example.com"]
    state = app.graph.get_state({"configurable": {"thread_id": "t-sepa"}}).values
    assert [e.key for e in state["events"]] == [refund_id]


def test_a_redelivered_event_changes_nothing(
    app: KeelApp, backend: DemoBackend, settings: Settings
) -> None:
    _waiting(app)
    backend.settle_pending_refunds()
    app.dispatch_events()
    SqliteInbox(settings.home / "events.sqlite").restart()  # the relay forgets how far it read
    assert app.dispatch_events()[0]["woke"] == []
    assert len(backend.outbox()) == 1 and len(backend.refunds()) == 1


def test_an_event_for_something_else_leaves_it_waiting(app: KeelApp, backend: DemoBackend) -> None:
    _waiting(app)
    other = {"seq": 99, "type": "refund.settled", "key": "RF-0000", "payload": {},
             "created_at": "2026-11-25T00:00:00+00:00"}  # fmt: skip
    app.graph.invoke(
        Command(resume={"event": other}), {"configurable": {"thread_id": "t-sepa"}},
        context=app.context, durability="sync",
    )  # fmt: skip
    assert app.show("t-sepa").status == "awaiting_event"
    assert backend.outbox() == []


def test_a_card_refund_does_not_wait(app: KeelApp) -> None:
    from tests.conftest import REFUND_REQUEST

    outcome = app.run(REFUND_REQUEST)
    assert app.resume(outcome.thread_id, Decision(kind="approve")).status == "done"


def test_after_keel_seed_the_new_outbox_is_read_from_its_start(
    app: KeelApp, backend: DemoBackend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeding resets the backend, whose outbox numbers events from 1 again: the relay's old
    cursor must not skip them (a second `keel demo` on one home left its thread asleep)."""
    _waiting(app)
    backend.settle_pending_refunds()
    assert app.dispatch_events()[0]["woke"] == ["t-sepa"]
    monkeypatch.setenv("KEEL_HOME", str(settings.home))
    assert main(["domain", "seed"]) == 0
    outcome = app.run(SEPA_REQUEST, thread_id="t-again")
    app.resume(outcome.thread_id, Decision(kind="approve", reviewer="ann"))
    assert main(["domain", "settle"]) == 0
    assert app.dispatch_events()[0]["woke"] == ["t-again"]
    assert app.show("t-again").status == "done"


def test_one_sqlite_relay_at_a_time_and_a_dead_ones_turn_is_free(tmp_path: Path) -> None:
    """Two relays on one inbox file: the second waits, then gives up with RelayBusy; once the
    first is done (or its process gone: the lock is the kernel's), the turn is free."""
    import multiprocessing

    from keel.errors import RelayBusy

    path = tmp_path / "events.sqlite"
    first, second = SqliteInbox(path), SqliteInbox(path)
    with first.relaying(), pytest.raises(RelayBusy), second.relaying(wait_s=0.3):
        pass
    with second.relaying(wait_s=0.3):
        pass  # the first is done: the turn is free
    ctx = multiprocessing.get_context("fork")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_turn_then_die, args=(path, held))
    holder.start()
    assert held.wait(30)
    with pytest.raises(RelayBusy), second.relaying(wait_s=0.3):
        pass
    holder.kill()
    holder.join(30)
    with second.relaying(wait_s=5):
        pass  # the killed relay's lock went with its process


def _hold_turn_then_die(path: Path, held: Any) -> None:
    with SqliteInbox(path).relaying():
        held.set()
        time.sleep(60)
