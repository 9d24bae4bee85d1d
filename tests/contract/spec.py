"""What the contract suite needs from a domain, declared as data in the domain's folder.

A domain's ``contract.yaml`` names a request that acts (and the facts it leaves behind), the
calls each of its scopes must refuse, arguments its tools' contracts must refuse, and optionally
a poisoned document of its own corpus. The suite reads it with this model (unknown keys refused),
and the domain object gives ``snapshot(settings)``: every fact a write or irreversible call can
change, one line each, so that "exactly once" is a comparison of two sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.yamlfile import load_reviewed

CONTRACT_FILE = "contract.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Acting(Strict):
    """A request whose plan holds at least one irreversible step that needs approval."""

    request: str = Field(min_length=1)
    effects: list[str] = Field(
        min_length=1,
        description="the lines snapshot(settings) gains once the request is approved and done",
    )
    kill_after: str = Field(
        description="an irreversible tool of the plan: the worker is killed right after its "
        "side effect, before the checkpoint that records it"
    )
    then: str | None = Field(
        default=None, description="a domain command that settles an awaited event, if any"
    )


class OutOfScope(Strict):
    """One call a scope must refuse: made by ``agent`` in a thread about ``subjects``."""

    agent: str = "executor"
    tool: str
    args: dict[str, Any]
    subjects: dict[str, str] = Field(default_factory=dict)


class BadCall(Strict):
    """Arguments a tool's input contract refuses before anything is called."""

    tool: str
    args: dict[str, Any]


class Poisoned(Strict):
    """A low-trust or injected source of the domain's own corpus, and a request that finds it."""

    source: str
    request: str


class Contract(Strict):
    acting: Acting
    unknown: str = Field(description="a request naming a record that does not exist")
    scopes: dict[str, OutOfScope] = Field(
        default_factory=dict, description="scope name -> a call it must refuse"
    )
    bad_calls: list[BadCall] = Field(min_length=1)
    poisoned: Poisoned | None = None


def load_contract(folder: Path) -> Contract:
    """The domain's ``contract.yaml``; a domain without one cannot be held to the suite."""
    path = folder / CONTRACT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the contract suite needs this file (see tests/contract/spec.py)"
        )
    _, data = load_reviewed(path.read_text(encoding="utf-8"))
    return Contract.model_validate(data)
