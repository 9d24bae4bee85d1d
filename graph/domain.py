"""The seam between Keel's machinery and a domain: the one module a domain imports Keel from.

A domain is one folder (``domains/NAME/`` in this repository, or any importable package) holding
one object with the shape of ``Domain`` (what the runtime needs; ``Showcase`` adds what the demo
and the evals need), its corpus (``corpus/``), its permission manifest (``permissions.yaml``) and
its eval scenarios (``scenarios/``). ``KEEL_DOMAIN=package.module:attribute`` names it;
``load_domain`` imports it at start-up and refuses, in one line naming the setting, anything that
does not have the shape. Nothing in the machinery imports a domain.

A domain declares its tools (``ToolSpec``: a function over its backend, its input and output
types, its effect and integration); ``tool_registry`` wraps them with Keel's fault layer,
timeouts, retries and the home's shared breakers, and ``gated_registry`` puts the manifest's gate
on them. Everything a domain uses of Keel is re-exported here (``__all__``), so a domain imports
Keel from this one module; it sits above every module it re-exports in the layers, so the
re-exports add no import edge the layers do not already allow.
"""

from __future__ import annotations

import importlib
import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, runtime_checkable

from graph.state import CannotPlan, DomainEvent, Effect, EventWait, Evidence, Plan, Step
from keel.errors import (
    ConfigError,
    IntegrationError,
    KeelError,
    Permanent,
    PermissionDenied,
    Retryable,
    Unauthorized,
)
from keel.settings import Settings
from keel.yamlfile import load_reviewed
from stores.backends import Stores, open_stores
from stores.sqlitefile import SqliteFile, schema_gaps
from tools.faults import PROFILES, FaultInjector, FaultProfile, profile_named
from tools.permissions import ReceiptSigner, Scope, open_gate
from tools.resilience import RetryPolicy
from tools.spec import (
    OUTSIDE_TEXT,
    AgentTools,
    ShapeChanged,
    ThreadFacts,
    ToolCall,
    ToolRegistry,
    ToolSpec,
)


@dataclass(frozen=True)
class DomainCommand:
    """A verb of the domain's own, run as ``keel domain NAME`` (e.g. a shipping desk's
    ``deliver``: the carrier delivers the parcels in transit).

    Attributes:
        help: one line for ``keel domain --help``.
        run: does the work on the domain's backend; returns what ``--json`` prints and the line
            a person reads.
    """

    help: str
    run: Callable[[Settings], tuple[dict[str, Any], str]]


@dataclass(frozen=True)
class DemoRequest:
    """One request of ``keel demo``, with how the demo plays the humans and the world.

    Attributes:
        request: the request, in plain words.
        decision: what the demo's reviewer answers when the thread asks for approval.
        then: the domain command (``Domain.commands``) the demo runs when the thread waits for an
            event (the world moving on: a carrier delivering a parcel, a build finishing); the
            demo then delivers the domain's new events, which wakes the thread.
    """

    request: str
    decision: Literal["approve", "reject"] = "approve"
    then: str | None = None


class Domain(Protocol):
    """What a domain gives the runtime. Every method is called by Keel, never by the domain.

    The contract, which the contract suite checks for every domain:

    - ``tools`` are declared, never wrapped by the domain: Keel adds the fault layer, timeouts,
      retries and breakers (``tool_registry``), and they are reached only through the gate built
      from the domain's manifest: a domain never calls its backends around its own tools.
    - Reads (``gather_records``, ``postconditions``, ``health_probes``, scopes) go through the
      ``AgentTools`` they are given, so the caller's grants apply to them too.
    - ``runbook_plan`` and ``plan_rules`` are pure functions of their arguments: the planner and
      the validator may call them again on replay or after a crash. So is ``extract_entities``:
      the gate, the validator and the planner read it again on the request the thread guard
      recorded (``graph.approval.thread_entities``), never the state's ``entities``.
    - Every irreversible tool honours the idempotency key it is given and can say, through
      ``ToolRegistry.recorded``, whether a call with that key already happened.
    - Expected outcomes are values (``CannotPlan``, reasons as strings); exceptions are for
      broken infrastructure, and they are Keel's (``keel.errors``).

    Attributes:
        name: a short identifier (records, logs and ``keel demo`` show it).
        planner_role: who the planner works for, in a few words; the planner's system prompt says
            "You are the planner of {planner_role}".
        subject_keys: the entity names (from ``extract_entities``) that identify what a thread is
            about (an order, a parcel, a service); the gate's scopes read them as the
            thread's subjects, and nothing else the request says reaches the scopes.
    """

    name: str
    planner_role: str
    subject_keys: frozenset[str]

    def prepare(self, settings: Settings, *, reset: bool = False) -> None:
        """Create (and with ``reset``, re-create from its seed data) the domain's backing stores
        (``settings.domain_db`` is the file a SQLite-backed domain should use)."""

    def is_prepared(self, settings: Settings) -> bool:
        """Whether the backing stores hold what a run needs (tables, seed data; never just "the
        file exists": a failed first run leaves an empty one). Keel prepares on first use when
        not; a store that is not the domain's at all raises ``ConfigError``."""

    def tools(self, settings: Settings) -> Sequence[ToolSpec[Any, Any]]:
        """The domain's tools, declared: each a ``ToolSpec`` bound to the backend ``settings``
        point at. Plain declarations: Keel applies the fault layer, timeouts, retries and the
        shared breakers (``tool_registry``), the ledger and the gate itself."""

    def scopes(self) -> Mapping[str, Scope]:
        """The named scopes the permission manifest may narrow grants with, each with the
        arguments its check reads (a grant on a tool without them does not load)."""

    def extract_entities(self, request: str) -> dict[str, str]:
        """Business ids and values the request names (an order id, an amount, ...)."""

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        """Read, through read-only tools, the records the request's entities point at.

        A record that cannot be read goes under ``"unavailable"`` (a list of reasons: the
        planner escalates), one that does not exist under ``"missing"`` (it refuses)."""

    def runbook_plan(
        self, runbook: Evidence, request: str, entities: dict[str, str], records: dict[str, Any]
    ) -> Plan | CannotPlan:
        """Fill one runbook's steps from the request and the records (the offline planner)."""

    def plan_rules(self, plan: Plan, records: dict[str, Any]) -> list[str]:
        """Business rules a plan must meet; each broken rule is one reason."""

    def postconditions(self, step: Step, output: dict[str, Any], tools: AgentTools) -> list[str]:
        """What must be true after a step ran; each failure is one reason."""

    def awaited_event(self, step: Step, index: int, output: dict[str, Any]) -> EventWait | None:
        """When a step's effect is still in flight after it answered: the event that settles it."""

    def events_after(self, settings: Settings, seq: int) -> list[DomainEvent]:
        """The domain's business events newer than ``seq`` (its outbox), oldest first."""

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """For each integration, a cheap read (tool, arguments) that shows whether it answers."""

    def describe_action(self, step: Step, output: dict[str, Any] | None) -> str | None:
        """One action in words, for the person who asked (the chat's answer, an escalation's
        account): with ``output`` None, what the step would do ("ship order ORD-7 to
        Lyon"); with the tool's validated output, what was done, with the facts that matter
        ("shipped order ORD-7 to Lyon (parcel P-12)"). None: Keel words it from the
        tool's name and its output (``action_words``)."""

    def fault_profiles(self) -> Mapping[str, FaultProfile]:
        """The domain's own named fault profiles (for its integrations), usable wherever a
        profile is named (``KEEL_FAULTS``, ``--faults``) beside the generic ones in
        ``tools.faults.PROFILES`` (which name no integration); ``tool_registry`` applies the one
        ``settings.faults`` names. The faults eval runs each of them, and the generic
        ``transient``, on the domain's scenarios tagged ``faults``."""

    def commands(self) -> Mapping[str, DomainCommand]:
        """The domain's own CLI verbs (``keel domain NAME``); ``seed`` is Keel's and need not be
        listed."""


class Showcase(Domain, Protocol):
    """What the demo, the evals and the contract suite need of a domain beside the runtime's
    ``Domain``: the requests ``keel demo`` runs, what it prints after them, and the snapshot every
    end state is judged by. ``as_showcase`` checks a loaded domain has them."""

    def demo_requests(self) -> Sequence[DemoRequest]:
        """The requests ``keel demo`` runs, in order."""

    def demo_summary(self, settings: Settings) -> dict[str, Any]:
        """What the backend holds after the demo (a few counts and lists), printed and returned
        by ``keel demo --json``."""

    def snapshot(self, settings: Settings) -> set[str]:
        """Every observable fact a write or irreversible call can change, one line each: what
        the contract suite and every eval judge an end state by (never an agent's own account).

        Two kinds of line (``split_snapshot`` reads them):

        - a state a write changes, ``"SUBJECT is VALUE"`` (``"item ITEM-001 is archived"``);
        - one irreversible action done, ``"WHAT#ID"`` (``"archive of ITEM-001#7"``): the ``#ID``
          (the backend's own id for it) keeps two copies of the same action apart, so a
          duplicate shows as two lines with the same ``WHAT``.
        """


@runtime_checkable
class EditablePlans(Protocol):
    """What a domain whose runbooks are filled by code adds so that a reviewer may edit them.

    Optional: the runbook planner derives an edited plan from data runbooks by itself
    (``agents.runbooks.fill_runbook``), and from any other runbook by setting the edited
    arguments as given, after which the validator refuses a plan in which a step still states a
    value the edit replaced. A domain with this method derives everything that depends on the
    edited values (a notice stating an amount) itself.
    """

    def runbook_plan_edited(
        self,
        runbook: Evidence,
        request: str,
        entities: dict[str, str],
        records: dict[str, Any],
        pinned: Mapping[int, Mapping[str, Any]],
    ) -> Plan | CannotPlan:
        """``Domain.runbook_plan`` with some steps' arguments fixed (step index to arguments):
        a pure function like it, whose plan keeps those arguments and says nothing they
        contradict."""


@runtime_checkable
class LooksThingsUp(Protocol):
    """What a domain whose requests need its model planner to read first adds (optional).

    ``planner_lookups`` is how many read calls the model planner may make before it submits its
    plan (``agents.lookups``); ``KEEL_PLANNER_LOOKUPS`` overrides it. A domain without it gets
    none: its ``gather_records`` reads what its plans need.
    """

    planner_lookups: int


def split_snapshot(lines: Iterable[str]) -> tuple[Counter[str], set[str]]:
    """A snapshot's irreversible actions (each ``WHAT``, counted) and its states.

    Example:
        >>> actions, states = split_snapshot(
        ...     {"archive ITEM-001#1", "archive ITEM-001#2", "item ITEM-002 is active"}
        ... )
        >>> actions["archive ITEM-001"], sorted(states)
        (2, ['item ITEM-002 is active'])
    """
    actions: Counter[str] = Counter()
    states: set[str] = set()
    for line in lines:
        what, marker, _ = line.rpartition("#")
        if marker:
            actions[what] += 1
        else:
            states.add(line)
    return actions, states


class DomainDefaults:
    """What a domain that needs none of these gets, by subclassing: no events to wait for, no
    fault profiles of its own (the generic ones still apply), no verbs of its own, no scopes.

    A domain overrides any of them when it has one (a payment that settles later, an outage of
    one of its integrations, a command that plays the world).
    """

    def awaited_event(self, step: Step, index: int, output: dict[str, Any]) -> EventWait | None:
        return None

    def events_after(self, settings: Settings, seq: int) -> list[DomainEvent]:
        return []

    def fault_profiles(self) -> Mapping[str, FaultProfile]:
        return {}

    def commands(self) -> Mapping[str, DomainCommand]:
        return {}

    def describe_action(self, step: Step, output: dict[str, Any] | None) -> str | None:
        return None

    def scopes(self) -> Mapping[str, Scope]:
        return {}


def read_record(
    records: dict[str, Any], name: str, tools: AgentTools, tool: str, args: dict[str, Any]
) -> Literal["read", "unavailable", "missing"]:
    """Read one record through the caller's ``tools`` into ``records[name]`` (what
    ``Domain.gather_records`` does for each record), and say how it went.

    A system that is broken (a fault retries did not cure, a changed shape, expired credentials)
    or a read not granted puts ``"REF: why"`` under ``records["unavailable"]`` (the planner
    escalates: the record may exist); a record the system says does not exist goes under
    ``records["missing"]`` (the planner refuses).

    Example:
        >>> from keel.errors import Permanent
        >>> class Tools:
        ...     def call(self, tool, args):
        ...         raise Permanent(f"no order {args['order_id']}")
        >>> records = {}
        >>> read_record(records, "order", Tools(), "get_order", {"order_id": "O-9"})
        'missing'
        >>> records
        {'missing': ['O-9: no order O-9']}
    """
    ref = ",".join(str(value) for value in args.values())
    try:
        records[name] = tools.call(tool, args)
    except (Retryable, ShapeChanged, PermissionDenied, Unauthorized) as err:
        records.setdefault("unavailable", []).append(f"{ref}: {err}")
        return "unavailable"
    except IntegrationError as err:
        records.setdefault("missing", []).append(f"{ref}: {err}")
        return "missing"
    return "read"


def action_words(domain: Domain, step: Step, output: dict[str, Any] | None) -> str:
    """An action in words: the domain's own (``Domain.describe_action``), else a plain reading
    of the tool's name and its arguments (planned) or its output (done).

    Example:
        >>> from graph.state import Step
        >>> step = Step(tool="archive_item", args={"item_id": "ITEM-001"}, purpose="",
        ...             effect="write")
        >>> action_words(DomainDefaults(), step, None)  # type: ignore[arg-type]
        'archive item (item id ITEM-001)'
        >>> action_words(DomainDefaults(), step, {"item_id": "ITEM-001", "archive": 3,
        ...                                       "replayed": False})  # type: ignore[arg-type]
        'archive item done (item id ITEM-001, archive 3)'
    """
    worded = domain.describe_action(step, output)
    if worded:
        return worded
    name = step.tool.replace("_", " ")
    shown = step.args if output is None else output
    facts = ", ".join(
        f"{key.replace('_', ' ')} {_short(value)}"
        for key, value in shown.items()
        if key != "replayed" and isinstance(value, str | int | float)
    )
    done = "" if output is None else " done"
    return f"{name}{done} ({facts})" if facts else f"{name}{done}"


def _short(value: str | int | float, limit: int = 60) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _members(protocol: type) -> tuple[str, ...]:
    return tuple(
        name
        for name in (*protocol.__annotations__, *vars(protocol))
        if not name.startswith("_") and name not in ("mro",)
    )


_MEMBERS = _members(Domain)
_SHOWCASE = tuple(name for name in _members(Showcase) if name not in _MEMBERS)


def load_domain(spec: str) -> Domain:
    """The domain a ``package.module:attribute`` setting names.

    The attribute may be a domain object, or a class or factory that makes one with no
    arguments.

    Raises:
        ConfigError: the module does not import, the attribute is missing, or the object lacks
            part of the ``Domain`` protocol; the message names ``KEEL_DOMAIN``.

    Example:
        >>> load_domain("domains.support_desk:SupportDesk").name
        'support_desk'
        >>> load_domain("domains.support_desk:Nothing")
        Traceback (most recent call last):
        ...
        keel.errors.ConfigError: KEEL_DOMAIN=domains.support_desk:Nothing: the module has no \
attribute 'Nothing'
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"KEEL_DOMAIN={spec}: expected package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"KEEL_DOMAIN={spec}: cannot import {module_name} ({err})") from err
    if not hasattr(module, attribute):
        raise ConfigError(f"KEEL_DOMAIN={spec}: the module has no attribute {attribute!r}")
    found = getattr(module, attribute)
    domain = found() if inspect.isclass(found) or inspect.isfunction(found) else found
    missing = [name for name in _MEMBERS if not hasattr(domain, name)]
    if missing:
        raise ConfigError(
            f"KEEL_DOMAIN={spec}: {type(domain).__name__} is not a Domain (graph/domain.py); "
            f"it lacks {', '.join(missing)}"
        )
    return cast(Domain, domain)


def as_showcase(domain: Domain) -> Showcase:
    """The domain as the demo and the evals use it (``Showcase``).

    Raises:
        ConfigError: the domain lacks ``demo_requests``, ``demo_summary`` or ``snapshot``.

    Example:
        >>> as_showcase(load_domain("domains.support_desk:SupportDesk")).name
        'support_desk'
        >>> as_showcase(DomainDefaults())  # type: ignore[arg-type]
        Traceback (most recent call last):
        ...
        keel.errors.ConfigError: DomainDefaults is not a Showcase (graph/domain.py): it lacks \
demo_requests, demo_summary, snapshot; the demo and the evals need them
    """
    missing = [name for name in _SHOWCASE if not hasattr(domain, name)]
    if missing:
        raise ConfigError(
            f"{type(domain).__name__} is not a Showcase (graph/domain.py): it lacks "
            f"{', '.join(missing)}; the demo and the evals need them"
        )
    return cast(Showcase, domain)


def load_showcase(spec: str) -> Showcase:
    """``load_domain`` for the demo and the evals: the domain, with what they need of it."""
    return as_showcase(load_domain(spec))


def tool_registry(domain: Domain, settings: Settings, stores: Stores | None = None) -> ToolRegistry:
    """The domain's declared tools as Keel runs them: the fault profile ``settings.faults`` names
    (the domain's own first, ``Domain.fault_profiles``) seeded by ``settings.fault_seed``, the
    timeout per attempt (a tool's own ``timeout_s`` first), retries, and each integration's
    breaker kept in the home's shared store, so every process of the home sees it open.

    No gate yet: ``gated_registry`` is what a run gets. ``stores``: the opened stores whose
    breakers to use (``open_stores(settings)`` when not given).

    Raises:
        ConfigError: the domain's ``tools`` gave something other than tool declarations (a
            domain written for the seam before Keel wrapped the tools returned a registry).
    """
    given = domain.tools(settings)
    declared = list(given) if not isinstance(given, ToolRegistry) else []
    wrong = (
        given
        if isinstance(given, ToolRegistry)
        else next((t for t in declared if not isinstance(t, ToolSpec)), None)
    )
    if wrong is not None:
        raise ConfigError(
            f"{type(domain).__name__}.tools returned a {type(wrong).__name__}: it declares "
            "ToolSpecs now and Keel wraps them (docs/domains.md, 'The seam')"
        )
    profile = profile_named(settings.faults, domain.fault_profiles())
    if profile != PROFILES["none"]:
        faults = FaultInjector(profile, settings.fault_seed)
        declared = faults.wrap_specs(declared, settings.tool_timeout_s)
    return ToolRegistry(
        declared,
        timeout_s=settings.tool_timeout_s,
        retry=RetryPolicy(attempts=settings.tool_retry_attempts),
        breaker_for=(stores or open_stores(settings)).breakers.breaker,
    )


def gated_registry(
    domain: Domain, settings: Settings, stores: Stores | None = None
) -> ToolRegistry:
    """The domain's tools with the configured manifest's gate on them, as every caller gets them.

    Deny by default: no manifest, no registry (and so no graph run).
    """
    tools = tool_registry(domain, settings, stores)
    open_gate(
        settings.policy_file, tools, domain.scopes(), settings.home,
        signer=ReceiptSigner.from_settings(settings),
    )  # fmt: skip
    return tools


__all__ = [
    "OUTSIDE_TEXT",
    "AgentTools",
    "CannotPlan",
    "ConfigError",
    "DemoRequest",
    "Domain",
    "DomainCommand",
    "DomainDefaults",
    "DomainEvent",
    "EditablePlans",
    "Effect",
    "EventWait",
    "Evidence",
    "FaultProfile",
    "IntegrationError",
    "KeelError",
    "LooksThingsUp",
    "Permanent",
    "PermissionDenied",
    "Plan",
    "Retryable",
    "Scope",
    "Settings",
    "ShapeChanged",
    "Showcase",
    "SqliteFile",
    "Step",
    "ThreadFacts",
    "ToolCall",
    "ToolRegistry",
    "ToolSpec",
    "Unauthorized",
    "action_words",
    "as_showcase",
    "gated_registry",
    "load_domain",
    "load_reviewed",
    "load_showcase",
    "read_record",
    "schema_gaps",
    "split_snapshot",
    "tool_registry",
]
