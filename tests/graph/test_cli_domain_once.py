"""`keel run` and `keel demo` build their domain once: the fault profile's check, the verb and
the app share it."""

from __future__ import annotations

from typing import Any

import pytest

import domains.support_desk
from domains.support_desk import SupportDesk
from tests.conftest import REFUND_REQUEST


@pytest.mark.parametrize(
    "argv",
    [
        ["run", REFUND_REQUEST],
        ["run", REFUND_REQUEST, "--faults", "transient"],
        ["demo", "--faults", "none"],
    ],
)
def test_keel_builds_the_domain_once(
    keel: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    built: list[SupportDesk] = []

    def counted() -> SupportDesk:
        built.append(SupportDesk())
        return built[-1]

    # KEEL_DOMAIN names domains.support_desk:SupportDesk; a function there is called to make it.
    monkeypatch.setattr(domains.support_desk, "SupportDesk", counted)
    code, data, err = keel(*argv, "--json")
    assert code == 0, err
    assert data
    assert len(built) == 1
