"""`keel run` builds its domain once: the fault profile's check, the verb and the app share it."""

from __future__ import annotations

from typing import Any

import pytest

import domains.support_desk
from domains.support_desk import SupportDesk
from tests.conftest import REFUND_REQUEST


@pytest.mark.parametrize("faults", [[], ["--faults", "transient"]])
def test_keel_run_builds_the_domain_once(
    keel: Any, monkeypatch: pytest.MonkeyPatch, faults: list[str]
) -> None:
    built: list[SupportDesk] = []

    def counted() -> SupportDesk:
        built.append(SupportDesk())
        return built[-1]

    # KEEL_DOMAIN names domains.support_desk:SupportDesk; a function there is called to make it.
    monkeypatch.setattr(domains.support_desk, "SupportDesk", counted)
    code, data, err = keel("run", REFUND_REQUEST, *faults, "--json")
    assert code == 0, err
    assert data["thread_id"]
    assert len(built) == 1
