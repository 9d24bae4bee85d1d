"""Permissions the system enforces: the manifest, the gate every tool call passes, access review.

The domain's manifest grants each agent exactly the tools and effects it needs (deny by default;
no manifest, no calls). The gate runs inside ``ToolRegistry.invoke``, where no model output
reaches, and checks every call in order: the action was not rejected by a human; the agent holds
the grant and the effect; the approval where one is needed (a receipt signed for exactly this
call, agent, thread and manifest version; taint and ``four_eyes`` included); the limits, then the
domain's scopes (a scope that raises denies: fail closed); and ``refuse_outside`` (arguments that
may not rest on outside text, their provenance recomputed at the call by ``tools.provenance``).
What each check means: ``docs/approvals-and-permissions.md`` ("Permissions"). The thread's facts
(used receipts, rejections, taint, the requester) come from the thread guard (``stores.guard``)
through ``ThreadFacts``. A denial raises ``PermissionDenied`` after the registry has told its
listeners (the flight recorder), so every decision is on record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graph.state import Effect, Receipt
from keel.errors import ConfigError, IntegrationError, PermissionDenied
from keel.settings import Settings
from keel.yamlfile import line_of, load_reviewed, problem_of
from tools.provenance import refusal
from tools.spec import AgentTools, CallRequest, ThreadFacts, ToolRegistry, ToolSpec

ScopeCheck = Callable[[dict[str, Any], ThreadFacts, AgentTools], str | None]
"""A scope's check: given the call's arguments, the thread's facts and the calling agent's tools,
the reason the call is out of scope, or None. It reads through the agent's own grants."""


class Scope(NamedTuple):
    """A named scope the manifest may narrow a grant with, and the arguments its check reads.

    A grant of the scope on a tool whose input model lacks one of ``reads`` is refused when the
    manifest loads; a check that raises anyway denies the call (fail closed).

    Example:
        >>> Scope(lambda args, facts, tools: None, reads=frozenset({"order_id"})).reads
        frozenset({'order_id'})
    """

    check: ScopeCheck
    reads: frozenset[str] = frozenset()

    @classmethod
    def entity_in_request(cls, argument: str, *, subject: str | None = None) -> Scope:
        """The scope "only the one the request names": the call's ``argument`` must equal the
        thread's subject ``subject`` (the entity ``extract_entities`` named; by default the
        argument's own name). A request that names none refuses every call.

        Example:
            >>> from tools.spec import ThreadFacts
            >>> scope = Scope.entity_in_request("customer_id")
            >>> facts = ThreadFacts(subjects={"customer_id": "C-1"})
            >>> scope.check({"customer_id": "C-1"}, facts, None)  # type: ignore[arg-type]
            >>> scope.check({"customer_id": "C-2"}, facts, None)  # type: ignore[arg-type]
            'customer C-2 is not the one the request names (C-1)'
            >>> scope.reads
            frozenset({'customer_id'})
        """
        entity = subject or argument
        what = argument.removesuffix("_id").replace("_", " ")

        def named_in_request(
            args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
        ) -> str | None:
            named = facts.subjects.get(entity)
            if args[argument] != named:
                return f"{what} {args[argument]} is not the one the request names ({named})"
            return None

        return cls(named_in_request, frozenset({argument}))


EFFECT_ORDER: dict[Effect, int] = {"read": 0, "write": 1, "irreversible": 2}


class Grant(BaseModel):
    """One tool granted to one agent, and how narrowly.

    ``four_eyes: true`` (with ``approval: required``) asks for an approval by someone other than
    the action's requester: the user a serving engine authenticated for the thread's first run
    (recorded in the thread guard at intake, from the run's config, never from the state or the
    input). An answer from the requester is refused (the approval is asked again, with the
    reason), and the gate refuses a receipt the requester signed. Where no engine authenticated
    the requester (``keel run``, ``KeelApp``, a Python caller with no ``langgraph_auth_user``),
    there is nobody to compare the reviewer with and the rule does not apply: on one machine,
    whoever runs Keel is every role at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval: Literal["required", "none"] = "none"
    four_eyes: bool = Field(
        default=False, description="approved by someone other than the thread's requester"
    )
    scopes: list[str] = Field(default_factory=list)
    limits: dict[str, float] = Field(
        default_factory=dict, description="argument name -> the largest value allowed"
    )
    refuse_outside: list[str] = Field(
        default_factory=list,
        description="arguments that must come from the request or a trusted record, never "
        "from outside text alone (tools.provenance)",
    )


class AgentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    effects: list[Effect]
    corpus: Literal["read", "none"] = "none"
    tools: dict[str, Grant] = Field(default_factory=dict)


class Manifest(BaseModel):
    """The whole reviewed file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    agents: dict[str, AgentPolicy]


def load_manifest(path: Path, tools: ToolRegistry, scopes: Mapping[str, Scope]) -> Manifest:
    """Read and check a manifest against the tools and scopes that exist.

    Raises:
        ConfigError: the file is missing, is not YAML, does not fit the schema, or contradicts
            itself or the tools; the message names the line.
    """
    if not path.is_file():
        raise ConfigError(
            f"no permission manifest at {path}: Keel denies every tool call without one "
            "(set KEEL_POLICY_FILE)"
        )
    return parse_manifest(path.read_text(encoding="utf-8"), str(path), tools, scopes)


def parse_manifest(
    text: str, path: str, tools: ToolRegistry, scopes: Mapping[str, Scope]
) -> Manifest:
    """``load_manifest`` for text already read; ``path`` names it in errors."""
    try:
        root, data = load_reviewed(text)
    except yaml.YAMLError as err:
        line, said = problem_of(err)
        at = f"{path}:{line}" if line is not None else path
        raise ConfigError(f"{at}: not valid YAML: {said}") from err
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        line = line_of(root, first["loc"])
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}:{line}: {where}: {first['msg']}") from err
    for agent, policy in manifest.agents.items():
        for tool, grant in policy.tools.items():
            line = line_of(root, ("agents", agent, "tools", tool))
            problem = _contradiction(tool, grant, policy, tools, scopes)
            if problem:
                raise ConfigError(f"{path}:{line}: agents.{agent}.tools.{tool}: {problem}")
    return manifest


def _contradiction(
    tool: str,
    grant: Grant,
    policy: AgentPolicy,
    tools: ToolRegistry,
    scopes: Mapping[str, Scope],
) -> str | None:
    if tool not in tools:
        return f"no tool named {tool!r} (known: {', '.join(tools.names())})"
    spec = tools[tool]
    if spec.effect not in policy.effects:
        return f"the tool is {spec.effect}, but the agent's effects are {policy.effects}"
    if spec.effect == "irreversible" and grant.approval != "required":
        return "an irreversible tool needs `approval: required`"
    if grant.four_eyes and grant.approval != "required":
        return "`four_eyes: true` needs `approval: required` (it says who may approve)"
    unknown = [s for s in grant.scopes if s not in scopes]
    if unknown:
        return f"unknown scope(s) {unknown} (known: {sorted(scopes)})"
    fields = spec.input_model.model_fields
    for scope in grant.scopes:
        missing = sorted(scopes[scope].reads - set(fields))
        if missing:
            return f"scope {scope!r} reads {missing}, which {tool} does not take"
    bad_limits = [name for name in grant.limits if name not in fields]
    if bad_limits:
        return f"limits name argument(s) the tool does not take: {bad_limits}"
    not_numbers = [name for name in grant.limits if not _numeric(fields[name].annotation)]
    if not_numbers:
        return f"limits must name numeric (int or float) arguments; {not_numbers} are not"
    unknown_args = [name for name in grant.refuse_outside if name not in fields]
    if unknown_args:
        return f"refuse_outside names argument(s) the tool does not take: {unknown_args}"
    return None


def _numeric(annotation: Any) -> bool:
    """Whether an input model field holds a number (int or float, optionally None), not a bool."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return bool(members) and all(_numeric(a) for a in members)
    return False


@dataclass(frozen=True)
class ReceiptSigner:
    """Signs receipts with a key only Keel holds, so a receipt written into state is not enough.

    A resume payload can only answer the pending question; a receipt forged into a checkpoint
    (``update_state``, a hand-edited database) lacks a valid signature and is refused.
    """

    key: bytes

    def __repr__(self) -> str:
        return "ReceiptSigner(key=<hidden>)"  # the dataclass's own repr would print the key

    @classmethod
    def from_settings(cls, settings: Settings) -> ReceiptSigner:
        """The key of ``KEEL_APPROVAL_KEY`` / ``KEEL_APPROVAL_KEY_FILE`` (nothing is written to
        disk), else the one kept in the home (``for_home``), for a single machine.

        A receipt signed on one worker must verify on every other: with ``KEEL_POSTGRES_URL``
        (threads shared across machines) a key per home would make each worker its own, so the
        setting is required there, and its absence is refused when the worker starts.

        Raises:
            ConfigError: Postgres is configured and no key setting is.

        Example:
            >>> s = Settings(home=Path("/tmp/keel-doc"), approval_key="0f" * 32)
            >>> ReceiptSigner.from_settings(s).key == bytes.fromhex("0f" * 32)
            True
        """
        key = settings.approval_signing_key()
        if key is not None:
            return cls(key)
        if settings.backend == "postgres":
            raise ConfigError(
                "KEEL_POSTGRES_URL is set but no approval key is: set KEEL_APPROVAL_KEY (or "
                "KEEL_APPROVAL_KEY_FILE) to the same 64 hex characters on every worker "
                "(`openssl rand -hex 32`), so that a receipt signed on one verifies on all"
            )
        return cls.for_home(settings.home)

    @classmethod
    def for_home(cls, home: Path) -> ReceiptSigner:
        """The key kept at ``home/approval.key`` (created on first use, readable by owner only)."""
        path = home / "approval.key"
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            # Written whole under another name, then linked into place: a process starting at
            # the same moment sees no key or the whole key, never an empty file, and the first
            # key linked wins for every process.
            draft = home / f".approval.key.{secrets.token_hex(8)}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process linked its key first: use that one
            finally:
                draft.unlink()
        return cls(bytes.fromhex(path.read_text(encoding="utf-8").strip()))

    def sign(self, receipt: Receipt) -> Receipt:
        return receipt.model_copy(update={"signature": self._mac(receipt)})

    def valid(self, receipt: Receipt) -> bool:
        return hmac.compare_digest(receipt.signature, self._mac(receipt))

    def _mac(self, receipt: Receipt) -> str:
        body = receipt.model_dump(exclude={"signature"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hmac.new(self.key, canonical.encode(), hashlib.sha256).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PermissionGate:
    """The one gate every tool call passes (``ToolRegistry.gate``)."""

    manifest: Manifest
    scopes: Mapping[str, Scope]
    signer: ReceiptSigner
    clock: Callable[[], datetime] = field(default=_utc_now)

    @property
    def version(self) -> str:
        return self.manifest.version

    def check(self, request: CallRequest, tools: ToolRegistry) -> tuple[str, str] | None:
        """None when the call may run; else ``(rule, reason)``. Never raises for a denial."""
        spec, facts, name = request.spec, request.facts, request.spec.name
        if request.digest in facts.rejected:
            return "rejected", f"a reviewer rejected this exact {name} call; it needs a new plan"
        policy = self.manifest.agents.get(request.agent)
        if policy is None:
            return "no-grant", f"the manifest grants nothing to agent {request.agent!r}"
        grant = policy.tools.get(name)
        if grant is None:
            return "no-grant", f"agent {request.agent!r} holds no grant for {name}"
        if spec.effect not in policy.effects:
            return "effect", f"agent {request.agent!r} may not perform {spec.effect} calls"
        # Before any approval: a reviewer's yes does not make outside text the user's word.
        if facts.tainted or (facts.sources is not None and facts.sources.tainted):
            outside = refusal(name, request.args, grant.refuse_outside, facts.sources)
            if outside is not None:
                return "outside", outside
        tainted = bool(facts.tainted) and spec.effect != "read"
        if grant.approval == "required" or tainted:
            problem = self._receipt_problem(request, facts)
            if problem is not None:
                if tainted and grant.approval != "required":
                    problem += (
                        f" (low-trust evidence in this thread: {', '.join(facts.tainted)}; "
                        "a write planned from it needs an explicit approval)"
                    )
                    return "taint", problem
                return "approval", problem
        receipt = request.approval
        if (
            grant.four_eyes
            and receipt is not None
            and facts.requester is not None
            and receipt.approved_by == facts.requester
        ):
            return "four-eyes", (
                f"{name} needs the approval of someone other than its requester "
                f"({facts.requester}); {receipt.approved_by} approved it"
            )
        for arg, ceiling in grant.limits.items():
            value = request.args.get(arg)
            if isinstance(value, int | float) and value > ceiling:
                return "limit", f"{name}.{arg} = {value} exceeds the manifest's limit {ceiling}"
        own_tools = tools.for_agent(request.agent, facts)
        for scope in grant.scopes:
            try:
                reason = self.scopes[scope].check(request.args, facts, own_tools)
            except (IntegrationError, PermissionDenied) as err:
                reason = f"could not be verified: {err}"  # a system down: fail closed
            except Exception as err:  # a check that breaks (a bug, a misfit) denies, never crashes
                reason = f"could not be verified: {type(err).__name__}: {err}"
            if reason is not None:
                return f"scope:{scope}", f"{name} is out of scope {scope!r}: {reason}"
        return None

    def four_eyes(self, tool: str, agent: str = "executor") -> bool:
        """Whether ``agent``'s grant of ``tool`` asks for an approver other than the requester."""
        policy = self.manifest.agents.get(agent)
        grant = policy.tools.get(tool) if policy else None
        return grant is not None and grant.four_eyes

    def needs_approval(self, agent: str, spec: ToolSpec[Any, Any], tainted: bool) -> bool:
        policy = self.manifest.agents.get(agent)
        grant = policy.tools.get(spec.name) if policy else None
        required = grant is not None and grant.approval == "required"
        return required or spec.effect == "irreversible" or (tainted and spec.effect != "read")

    def _receipt_problem(self, request: CallRequest, facts: ThreadFacts) -> str | None:
        receipt = request.approval
        if receipt is None:
            return f"{request.spec.name} needs a human's approval for exactly these arguments"
        if not self.signer.valid(receipt):
            return "the approval's signature is not Keel's (forged or altered)"
        if receipt.tool != request.spec.name or receipt.digest != request.digest:
            return "the approval is for a different action (the arguments changed since)"
        if receipt.approved_for != request.agent:
            return (
                f"the approval was given for agent {receipt.approved_for!r}, not {request.agent!r}"
            )
        if receipt.thread_id != facts.thread_id:
            return "the approval belongs to another thread"
        if receipt.manifest_version != self.version:
            return (
                f"the approval was given under manifest {receipt.manifest_version}, "
                f"not {self.version}"
            )
        if request.digest in facts.spent:
            return "the approval was already used (a receipt works once)"
        if datetime.fromisoformat(receipt.expires_at) < self.clock():
            return "the approval has expired"
        return None


def open_gate(
    path: Path,
    tools: ToolRegistry,
    scopes: Mapping[str, Scope],
    home: Path,
    clock: Callable[[], datetime] = _utc_now,
    *,
    signer: ReceiptSigner | None = None,
) -> PermissionGate:
    """Load the manifest, check it against the tools, and put the gate on the registry.

    ``signer`` signs and checks receipts; without it, the key kept in ``home`` does.
    """
    gate = PermissionGate(
        load_manifest(path, tools, scopes), scopes, signer or ReceiptSigner.for_home(home), clock
    )
    tools.gate = gate
    return gate


def effective_access(manifest: Manifest, tools: ToolRegistry) -> dict[str, Any]:
    """What each agent can actually do: grants resolved against the tools, fallbacks included.

    A fallback runs with its primary's grant, so a fallback added to a granted tool is new access
    and shows here (and in the access lock) although the manifest did not change.
    """
    out: dict[str, Any] = {}
    for agent, policy in sorted(manifest.agents.items()):
        grants = []
        for tool, grant in sorted(policy.tools.items()):
            spec = tools[tool]
            via: list[str] = []
            fallback = spec.fallback
            while fallback is not None and fallback in tools:
                via.append(fallback)
                fallback = tools[fallback].fallback
            grants.append(
                {
                    "tool": tool,
                    "effect": spec.effect,
                    "integration": spec.integration,
                    "approval": grant.approval,
                    "scopes": sorted(grant.scopes),
                    "limits": dict(sorted(grant.limits.items())),
                    "also_via": via,
                    # Only when set, so that every lock written before the field stays true.
                    **({"four_eyes": True} if grant.four_eyes else {}),
                    **(
                        {"refuse_outside": sorted(grant.refuse_outside)}
                        if grant.refuse_outside
                        else {}
                    ),
                }
            )
        out[agent] = {"corpus": policy.corpus, "effects": policy.effects, "grants": grants}
    return out


def access_lines(access: Mapping[str, Any]) -> list[str]:
    """One line per agent and grant: the form ``keel access`` prints and ``--diff`` compares."""
    lines = []
    for agent, entry in access.items():
        lines.append(f"{agent}: corpus {entry['corpus']}; effects {', '.join(entry['effects'])}")
        for g in entry["grants"]:
            extras = [f"approval {g['approval']}"] if g["approval"] == "required" else []
            extras += ["four eyes"] if g.get("four_eyes") else []
            extras += [f"scope {s}" for s in g["scopes"]]
            extras += [f"{k} <= {v:g}" for k, v in g["limits"].items()]
            extras += [f"via {v}" for v in g["also_via"]]
            extras += [f"refuse outside {a}" for a in g.get("refuse_outside", [])]
            tail = f" [{'; '.join(extras)}]" if extras else ""
            lines.append(f"{agent}: {g['tool']} ({g['effect']}, {g['integration']}){tail}")
    return lines


def manifest_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def lock_path(manifest: Path) -> Path:
    """The reviewed record of effective access, next to the manifest."""
    return manifest.with_name("access.lock.json")


def write_lock(path: Path, manifest: Manifest, tools: ToolRegistry) -> Path:
    lock = lock_path(path)
    body = {"manifest": manifest_digest(path), "version": manifest.version,
            "access": effective_access(manifest, tools)}  # fmt: skip
    lock.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return lock


def manifest_at(ref: str, path: Path) -> str:
    """The manifest's text at a git ref, e.g. ``HEAD~3`` or ``main``.

    Raises:
        ConfigError: not a git checkout, an unknown ref, or no manifest at that ref.
    """
    import subprocess

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
        relative = path.resolve().relative_to(Path(top).resolve())
        return subprocess.run(
            ["git", "show", f"{ref}:{relative.as_posix()}"], cwd=top, capture_output=True,
            text=True, check=True,
        ).stdout  # fmt: skip
    except (subprocess.CalledProcessError, ValueError, FileNotFoundError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise ConfigError(f"cannot read {path.name} at {ref!r}: {detail.strip()}") from err


def access_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[str]]:
    """Grants added and removed between two effective-access maps."""
    old, new = access_lines(before), access_lines(after)
    return {"added": [x for x in new if x not in old], "removed": [x for x in old if x not in new]}
