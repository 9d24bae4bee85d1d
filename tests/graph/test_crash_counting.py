"""The crash sweep's counting: boundaries are found at the store seams, not listed.

In-process (nothing is killed here: ``tests/integration/test_crash_sweep.py`` kills real
workers); the wrappers count through ``KeelApp.open(wrap_stores=...)``.
"""

from __future__ import annotations

from typing import Any

from domains.support_desk.backend import DemoBackend
from evals.crash_worker import Tripwire, _Counted, counting, live, true_status
from keel.app import Decision, KeelApp
from keel.settings import Settings


class _Store:
    def read_something(self) -> int:
        return 1

    def write_something(self) -> int:
        return 2

    def purge(self) -> int:
        """A write added later: nobody lists it, it is counted."""
        return 3


def test_every_method_but_the_named_reads_is_a_boundary() -> None:
    wire = Tripwire()
    store: Any = _Counted(_Store(), wire, "store", frozenset({"read_something"}))
    assert (store.read_something(), store.write_something(), store.purge()) == (1, 2, 3)
    assert wire.kinds == ["store.write_something", "store.purge"]


def test_a_life_counts_every_store_it_writes_to(settings: Settings) -> None:
    wire = Tripwire()
    live(settings, "bank_refund", "t-count", wire)
    kinds = set(wire.kinds)
    assert {"checkpoint.put", "checkpoint.put_writes", "ledger.begin", "ledger.finish",
            "inbox.subscribe", "inbox.delivered", "inbox.advance", "record.append",
            "lease.hold", "backend.call:refund_charge", "backend.acted:refund_charge",
            "backend.call:send_email", "backend.acted:send_email"} <= kinds  # fmt: skip
    # Before the call, then after the backend acted: in that order, once each.
    refund = [k for k in wire.kinds if k.endswith(":refund_charge")]
    assert refund == ["backend.call:refund_charge", "backend.acted:refund_charge"]
    assert true_status(settings, "t-count") == "done"
    assert len(DemoBackend(settings.domain_db).refunds()) == 1


def test_the_same_life_counts_the_same_boundaries(settings: Settings) -> None:
    """Kill point n must mean the same write in every run: the count is deterministic."""
    first, second = Tripwire(), Tripwire()
    live(settings, "billing_email", "t-a", first)
    live(settings, "billing_email", "t-b", second)
    assert first.kinds == second.kinds


def test_wrapped_stores_are_the_ones_the_app_uses(settings: Settings) -> None:
    wire = Tripwire()
    with KeelApp.open(settings, wrap_stores=counting(wire)) as app:
        assert app.show  # opened
        outcome = app.run("Please update the billing e-mail of C-1002 to finance@hopper.example")
    assert outcome.status == "done"
    assert "backend.call:update_billing_email" in wire.kinds
    assert wire.kinds.count("checkpoint.put") >= 5


def test_the_eval_refuses_bad_options_in_one_line(
    capsys: Any, monkeypatch: Any, settings: Settings
) -> None:
    from keel.cli import main

    monkeypatch.setenv("KEEL_HOME", str(settings.home))
    assert main(["eval", "--suite", "crashes", "--every", "0"]) == 2
    assert capsys.readouterr().err.strip() == "keel: error: --every must be at least 1"
    assert main(["eval", "--suite", "crashes", "--request", "vibes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: unknown backend(s) or request(s) ['vibes']"), err
    assert "\n" not in err


def test_the_true_status_tells_an_approval_from_an_event_wait_by_their_types(
    settings: Settings,
) -> None:
    """``true_status`` reads the interrupt with ``graph.wire``'s typed readers: an approval
    request, then the bank refund's wait for its settlement."""
    request = (
        "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
        "please refund the duplicate charge"
    )
    with KeelApp.open(settings) as app:
        assert app.run(request, thread_id="t-wait").status == "awaiting_approval"
    assert true_status(settings, "t-wait") == "awaiting_approval"
    with KeelApp.open(settings) as app:
        outcome = app.resume("t-wait", Decision(kind="approve", reviewer="ann"))
    assert outcome.status == "awaiting_event"
    assert true_status(settings, "t-wait") == "awaiting_event"
