"""The hostile-client suite against the engine: Aegra over PostgreSQL and Redis, attacked through
the LangGraph SDK and through raw HTTP.

One engine for the module (an API process and one worker process with three worker loops), its
users' tokens configured with roles (``alice`` and ``bob`` requesters, ``rita`` a reviewer,
``olga`` an operator, ``dave`` a token without roles). Every attack of ``evals.hostile.cases``
is played once per transport; the auth-configuration attacks also start a second server of the
deployment with a malformed ``KEEL_API_TOKENS``. Per class and transport the counts come from
the support desk's backend and from reading the threads back through the API: each must be 0.
About a minute and a half on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evals.hostile import run_on
from evals.hostile.cases import ATTACKS, CLASSES
from evals.hostile.engine_target import hostile_engine
from evals.hostile.play import Outcome, counts
from tests.integration.conftest import require_engine

pytestmark = pytest.mark.integration

TRANSPORTS = ("engine:sdk", "engine:http")


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, list[Outcome]]]:
    """Every engine attack on one engine, per transport (played once for the module)."""
    require_engine()
    with hostile_engine() as targets:
        yield {target.name: run_on(target, ATTACKS) for target in targets}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cls", CLASSES)
def test_no_unapproved_or_repeated_effect_and_no_broken_thread(
    outcomes: dict[str, list[Outcome]], transport: str, cls: str
) -> None:
    mine = [o for o in outcomes[transport] if o.cls == cls]
    found = counts(mine)[cls]
    failed = {o.attack: [*o.unapproved, *o.duplicated, *o.broken, *o.replies] for o in mine
              if o.unapproved or o.duplicated or o.broken}  # fmt: skip
    assert found["attempts"] == len([a for a in ATTACKS if a.cls == cls and "engine" in a.targets])
    assert (found["unapproved_effects"], found["duplicated_effects"], found["threads_broken"]) == (
        0, 0, 0
    ), failed  # fmt: skip
