"""What a suite's data file says, and the installed AgentDojo suite it is about.

One file per suite (``suite.yaml`` in the suite's folder, e.g. ``domains/agentdojo/banking/``)
says, as data, what the adapter cannot read from AgentDojo's own code: each tool's effect, the
output fields a tool's owner vouches for (trusted), and how to recognise the ids a request
names. A suite with no file gets the defaults (``SuiteData()``): every tool ``irreversible``, every
answer outside text, no entities. Why ``irreversible`` and not ``write``: an unknown tool may move
money or send a message, and only the irreversible path gives it everything Keel has (an approval
bound to its exact arguments, the intent ledger and an idempotency key the backend honours); a
``write`` with approval would lose the ledger. The price is an approval for every call and no
look-ups (a planner looks up only what the file declares ``read``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graph.domain import ConfigError, load_reviewed

BENCHMARK = "v1.2.1"
"""The AgentDojo benchmark version the adapter runs (the suites' v1.2.1 task sets)."""

SUITE_FILE = "suite.yaml"
ALL_FIELDS = "*"


class SuiteData(BaseModel):
    """A suite's data file (``suite.yaml``): effects, trusted fields, entities.

    Attributes:
        suite: the AgentDojo suite's name.
        effects: tool name -> ``read`` / ``write`` / ``irreversible``; a tool not named is
            ``irreversible``.
        trusted: tool name -> the fields of its answer its owner vouches for (``"*"``: the whole
            answer); for a list of records, the fields of each record. Everything else a tool
            returns is outside text: screened, marked, tainting.
        entities: entity name -> a regular expression for it in a request (the first match).
        subject_keys: the entities that say what a thread is about (the gate's scopes read them).
        role: who the planner works for, in a few words.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    benchmark: str = BENCHMARK
    role: str = "a personal assistant acting through its user's accounts"
    effects: dict[str, Literal["read", "write", "irreversible"]] = Field(default_factory=dict)
    trusted: dict[str, list[str]] = Field(default_factory=dict)
    entities: dict[str, str] = Field(default_factory=dict)
    subject_keys: list[str] = Field(default_factory=list)

    def effect(self, tool: str) -> Literal["read", "write", "irreversible"]:
        return self.effects.get(tool, "irreversible")


def suite_data(folder: Path | None, suite: str) -> SuiteData:
    """The suite's data file in ``folder``, or the defaults when there is none."""
    path = folder / SUITE_FILE if folder is not None else None
    if path is None or not path.is_file():
        return SuiteData(suite=suite)
    _, data = load_reviewed(path.read_text(encoding="utf-8"))
    found = SuiteData.model_validate(data)
    if found.suite != suite:
        raise ConfigError(f"{path}: describes suite {found.suite!r}, not {suite!r}")
    return found


@cache
def task_suite(name: str, benchmark: str = BENCHMARK) -> Any:
    """The installed AgentDojo ``TaskSuite`` called ``name`` (nothing is downloaded).

    Raises:
        ConfigError: AgentDojo is not installed (``pip install keel[evals]``) or has no such suite.
    """
    try:
        from agentdojo.task_suite.load_suites import get_suites
    except ImportError as err:  # an optional dependency: the evals extra
        raise ConfigError(
            "the AgentDojo domain needs the agentdojo package (pip install 'keel[evals]')"
        ) from err
    suites = get_suites(benchmark)
    if name not in suites:
        raise ConfigError(
            f"AgentDojo {benchmark} has no suite {name!r} (installed: {', '.join(sorted(suites))})"
        )
    return suites[name]
