"""The demo backend honours idempotency keys the way a payment API does."""

from __future__ import annotations

import pytest

from domains.support_desk.backend import DemoBackend
from keel.errors import Permanent


def test_the_same_key_returns_the_first_result(backend: DemoBackend) -> None:
    first = backend.refund_charge("CH-3002", 49.0, "duplicate", "key-1")
    again = backend.refund_charge("CH-3002", 49.0, "duplicate", "key-1")
    assert again == {**first, "replayed": True}
    assert len(backend.refunds()) == 1


def test_a_key_reused_for_another_request_is_refused(backend: DemoBackend) -> None:
    backend.send_email("ada@example.com", "s", "b", "key-2")
    with pytest.raises(Permanent, match="used for a different request"):
        backend.send_email("ada@example.com", "s", "other body", "key-2")
    assert len(backend.outbox()) == 1


def test_a_refund_never_exceeds_what_is_left(backend: DemoBackend) -> None:
    backend.refund_charge("CH-3002", 40.0, "partial", "key-3")
    with pytest.raises(Permanent, match="declined"):
        backend.refund_charge("CH-3002", 10.0, "partial", "key-4")
    assert [r["amount"] for r in backend.refunds()] == [40.0]
