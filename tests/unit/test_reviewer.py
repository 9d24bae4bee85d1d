"""Who answered an approval, read from the run's config as serving engines put it there."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph_sdk.auth.types import StudioUser
from pydantic import BaseModel, ConfigDict

from graph.reviewer import reviewer_of
from graph.state import Reviewer


class AegraUser(BaseModel):
    """The shape of Aegra 0.11's ``User``: extra fields allowed, unknown attributes raise."""

    model_config = ConfigDict(extra="allow")

    identity: str
    is_authenticated: bool = True
    display_name: str | None = None


class Unanswering:
    """A user object whose attribute lookups fail the way a proxy over a dict can."""

    identity = "carol"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # Python's own protocols (and pytest's ids) ask these
        raise KeyError(name)


def _config(user: object) -> dict[str, Any]:
    return {"configurable": {"thread_id": "t", "langgraph_auth_user": user}}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"identity": "ann"}, Reviewer(name="ann", authenticated=True, claimed="mallory")),
        (AegraUser(identity="ann"), Reviewer(name="ann", authenticated=True, claimed="mallory")),
        (
            AegraUser(identity="keel", keel_user="alice", display_name="alice"),
            Reviewer(name="alice", authenticated=True, claimed="mallory"),
        ),
        (
            StudioUser("bob", is_authenticated=True),
            Reviewer(name="bob", authenticated=True, claimed="mallory"),
        ),
        (Unanswering(), Reviewer(name="carol", authenticated=True, claimed="mallory")),
        (
            AegraUser(identity="anonymous", is_authenticated=False),
            Reviewer(name="unauthenticated:mallory", authenticated=False),
        ),
        (
            StudioUser("", is_authenticated=False),
            Reviewer(name="unauthenticated:mallory", authenticated=False),
        ),
    ],
)
def test_the_engines_user_decides_and_a_claim_never_overrides_it(
    user: object, expected: Reviewer
) -> None:
    assert reviewer_of(_config(user), "mallory") == expected


def test_a_claim_equal_to_the_user_is_not_noted_as_a_claim() -> None:
    assert reviewer_of(_config({"identity": "ann"}), "ann").claimed is None


@pytest.mark.parametrize(
    ("claimed", "name"), [("ann", "ann"), (None, "unknown"), ("  ", "unknown")]
)
def test_without_an_engine_the_local_callers_word_counts(claimed: str | None, name: str) -> None:
    assert reviewer_of({"configurable": {"thread_id": "t"}}, claimed) == Reviewer(
        name=name, authenticated=False
    )
    assert reviewer_of(None, claimed).name == name


def test_names_are_bounded() -> None:
    assert len(reviewer_of(_config({"identity": "x" * 500}), None).name) == 100
    assert len(reviewer_of(None, "y" * 500).name) == 100
