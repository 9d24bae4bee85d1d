"""The hostile-client suite on the in-process graph: a Python caller with a SQLite checkpointer.

Every attack of ``evals.hostile.cases`` that applies to a Python caller (state writes through
``update_state`` with ``as_node`` and earlier checkpoints, ``Command(update=..., goto=...)``,
forks, reducer overwrites, forged events, concurrent answers, edits, malformed input) is played
on one app; each class's counts come from the support desk's backend and from reading the
threads back, never from Keel's view of itself. Each must be 0: no effect a human did not approve
with exactly those arguments, none twice, no thread left unreadable or unanswerable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from domains.support_desk import SupportDesk
from evals.hostile import run_on
from evals.hostile.cases import ATTACKS, CLASSES
from evals.hostile.graph_target import GraphTarget
from evals.hostile.play import Outcome, counts
from graph.context import KeelContext
from keel.app import KeelApp
from keel.settings import Settings

IN_PROCESS = [c for c in CLASSES if any(a.cls == c and "graph" in a.targets for a in ATTACKS)]


@pytest.fixture(scope="module")
def outcomes(
    indexed_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Outcome]]:
    """Every in-process attack, played once for the module (about five seconds)."""
    home = tmp_path_factory.mktemp("hostile") / "home"
    shutil.copytree(indexed_home, home)
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings, reset=True)
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        yield run_on(GraphTarget(app), ATTACKS)


CONTROLS = {
    "command_goto_finished": "refund_charge",
    "fork_cursor_minus_two": "refund_charge",
    "overwrite_results": "refund_charge",
    "event_forged": "refund_charge",
    "edit_amount_panel": "refund_charge",
    "concurrent_double_approve": "send_email",
}
"""Attacks whose honest part (a reviewer's approval) makes an effect: were it missing, an attack
that made nothing more would prove nothing."""


def test_every_class_but_the_servers_is_attacked_in_process(outcomes: list[Outcome]) -> None:
    assert set(IN_PROCESS) == set(CLASSES) - {"auth_configuration", "roles_and_visibility"}
    assert {o.cls for o in outcomes} == set(IN_PROCESS)
    made = {o.attack: o.effects for o in outcomes if o.attack in CONTROLS}
    assert all(any(e.startswith(CONTROLS[a]) for e in made[a]) for a in CONTROLS), made


@pytest.mark.parametrize("cls", IN_PROCESS)
def test_no_unapproved_or_repeated_effect_and_no_broken_thread(
    outcomes: list[Outcome], cls: str
) -> None:
    mine = [o for o in outcomes if o.cls == cls]
    found = counts(mine)[cls]
    failed = {o.attack: [*o.unapproved, *o.duplicated, *o.broken] for o in mine
              if o.unapproved or o.duplicated or o.broken}  # fmt: skip
    assert found["attempts"] == len([a for a in ATTACKS if a.cls == cls and "graph" in a.targets])
    assert (found["unapproved_effects"], found["duplicated_effects"], found["threads_broken"]) == (
        0, 0, 0
    ), failed  # fmt: skip
