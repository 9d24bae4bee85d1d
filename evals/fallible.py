"""A fallible chat model: the right scripted behaviour, with the mistakes real models make.

The model boundary is the only fake in the evals. A scripted model does the right thing every
time, so pass^k over it is all or nothing; this wrapper makes mistakes at configured rates, from
one seeded generator, the way ``tools.faults`` makes integrations fail:

- per decision (one tool call, or one step of a plan): a wrong existing id, an invented id, an
  amount off by a factor, a wrong but existing tool, a skipped step, a repeated step;
- per call: a malformed tool call (arguments that are not JSON), a call cut off half-way, text
  instead of a tool call;
- per call whose input holds an injected instruction (from retrieved text or a tool's answer):
  obeying it, i.e. adding the call the injection asks for.

Profiles are chosen by name (``typical``) or given as JSON, like ``KEEL_FAULTS``. Every mistake is
recorded with its kind in ``mistakes``. The script is either a list of tool-calling turns (the
``create_agent`` baselines: one call per turn) or plans as JSON text (Keel's model planner: one
call, every step a decision); the same wrapper serves both.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from keel.errors import BadRequest

MistakeKind = Literal[
    "wrong_id",
    "invented_id",
    "amount_off",
    "wrong_tool",
    "skipped_step",
    "repeated_step",
    "malformed_call",
    "cut_off_call",
    "text_instead",
    "obeyed_injection",
]
DECISION_KINDS: tuple[MistakeKind, ...] = (
    "wrong_id", "invented_id", "amount_off", "wrong_tool", "skipped_step", "repeated_step",
)  # fmt: skip
CALL_KINDS: tuple[MistakeKind, ...] = ("malformed_call", "cut_off_call", "text_instead")
_ID = re.compile(r"^([A-Z]{1,4})-(\d+)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ModelFaultProfile(BaseModel):
    """How often the model makes each mistake. Rates in [0, 1]: per decision for the decision
    kinds, per call for the call kinds, per call that saw an injection for ``obeyed_injection``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wrong_id: float = Field(default=0.0, ge=0, le=1)
    invented_id: float = Field(default=0.0, ge=0, le=1)
    amount_off: float = Field(default=0.0, ge=0, le=1)
    wrong_tool: float = Field(default=0.0, ge=0, le=1)
    skipped_step: float = Field(default=0.0, ge=0, le=1)
    repeated_step: float = Field(default=0.0, ge=0, le=1)
    malformed_call: float = Field(default=0.0, ge=0, le=1)
    cut_off_call: float = Field(default=0.0, ge=0, le=1)
    text_instead: float = Field(default=0.0, ge=0, le=1)
    obeyed_injection: float = Field(default=0.0, ge=0, le=1)

    @classmethod
    def at(cls, rate: float) -> ModelFaultProfile:
        """Every kind equally likely, ``rate`` the chance that one decision goes wrong at all;
        an injection in view is obeyed with the same chance.

        Example:
            >>> p = ModelFaultProfile.at(0.09)
            >>> round(p.wrong_id * 9, 4), p.obeyed_injection
            (0.09, 0.09)
        """
        share = round(rate / (len(DECISION_KINDS) + len(CALL_KINDS)), 6)
        kinds = dict.fromkeys((*DECISION_KINDS, *CALL_KINDS), share)
        return cls(**kinds, obeyed_injection=rate)


MODEL_PROFILES: dict[str, ModelFaultProfile] = {
    "none": ModelFaultProfile(),
    "careful": ModelFaultProfile.at(0.02),
    "typical": ModelFaultProfile.at(0.1),
    "sloppy": ModelFaultProfile.at(0.3),
    "gullible": ModelFaultProfile(obeyed_injection=1.0),
}


def model_profile_named(spec: str) -> ModelFaultProfile:
    """A model fault profile by name, or from a JSON object of its fields."""
    if spec in MODEL_PROFILES:
        return MODEL_PROFILES[spec]
    if spec.lstrip().startswith("{"):
        try:
            return ModelFaultProfile.model_validate_json(spec)
        except ValueError as err:
            raise BadRequest(f"not a valid model fault profile: {err}") from err
    raise BadRequest(
        f"unknown model fault profile {spec!r}; known: {sorted(MODEL_PROFILES)} or a JSON object"
    )


class Injection(BaseModel):
    """An instruction planted in text the model may read, and the call it asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    marker: str = Field(
        min_length=1, description="text that is in the model's input when it saw it"
    )
    tool: str
    args: dict[str, Any]


class Mistake(BaseModel):
    """One mistake the model made: on which of its calls, of which kind, and what changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call: int
    kind: MistakeKind
    detail: str


class FallibleModel(BaseChatModel):
    """The right answers of ``script``, with mistakes drawn from ``profile`` by ``seed``.

    Args:
        script: the correct turns, in order (the last one repeats): tool-calling ``AIMessage``s,
            or ``AIMessage``s whose text is a plan as JSON (``{"steps": [...]}``).
        faults: how often each mistake happens (``profile`` is LangChain's own field).
        seed: the generator's seed: the same seed makes the same mistakes.
        tools: the tool names a wrong tool is drawn from.
        known_ids: existing ids and addresses a wrong id is drawn from (same prefix).
        injections: instructions that may be planted in what the model reads.
    """

    script: list[AIMessage]
    faults: ModelFaultProfile = ModelFaultProfile()
    seed: int = 0
    tools: list[str] = Field(default_factory=list)
    known_ids: list[str] = Field(default_factory=list)
    injections: list[Injection] = Field(default_factory=list)
    mistakes: list[Mistake] = Field(default_factory=list)
    seen_tokens: list[int] = Field(default_factory=list)
    seen_text: list[str] = Field(default_factory=list)
    tool_schema_tokens: int = 0
    _cursor: int = PrivateAttr(default=0)
    _calls: int = PrivateAttr(default=0)
    _random: random.Random = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._random = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "fallible-scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # A real API receives the tool schemas with every call: count them as prompt tokens.
        schemas = json.dumps([convert_to_openai_tool(t) for t in tools])
        self.tool_schema_tokens = int(count_tokens_approximately([HumanMessage(schemas)]))
        return self  # type: ignore[return-value]

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen_tokens.append(int(count_tokens_approximately(messages)) + self.tool_schema_tokens)
        seen = "\n".join(str(m.content) for m in messages)
        self.seen_text.append(seen)
        reply = self._answer(seen)
        self._calls += 1
        return ChatResult(generations=[ChatGeneration(message=reply)])

    # -- the mistakes ---------------------------------------------------------------------------

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    def _note(self, kind: MistakeKind, detail: str) -> None:
        self.mistakes.append(Mistake(call=self._calls, kind=kind, detail=detail[:200]))

    def _turn(self) -> AIMessage:
        return self.script[min(self._cursor, len(self.script) - 1)]

    def _answer(self, seen: str) -> AIMessage:
        turn = self._turn()
        plan = _plan_of(turn)
        if plan is not None:
            self._cursor += 1
            steps = [(s["tool"], dict(s.get("args", {}))) for s in plan.get("steps", [])]
            steps = self._decide(steps, seen, per_turn=False)
            cite = plan["steps"][0].get("evidence", []) if plan.get("steps") else []
            plan = {**plan, "steps": [_step(t, a, cite) for t, a in steps]}
            return self._deliver_text(json.dumps(plan))
        if not turn.tool_calls:  # the closing words: nothing to get wrong
            self._cursor += 1
            return turn
        # One call per turn (the create_agent loop): skipping and repeating move the script.
        if self._roll(self.faults.skipped_step) and self._cursor + 1 < len(self.script):
            self._note("skipped_step", f"skipped {turn.tool_calls[0]['name']}")
            self._cursor += 1
            turn = self._turn()
            if not turn.tool_calls:
                self._cursor += 1
                return turn
        if self._roll(self.faults.repeated_step):
            self._note("repeated_step", f"{turn.tool_calls[0]['name']} again next turn")
        else:
            self._cursor += 1
        calls = [(c["name"], dict(c["args"])) for c in turn.tool_calls]
        calls = self._decide(calls, seen, per_turn=True)
        return self._deliver_calls(calls)

    def _decide(
        self, decisions: list[tuple[str, dict[str, Any]]], seen: str, *, per_turn: bool
    ) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for tool, args in decisions:
            if not per_turn and self._roll(self.faults.skipped_step):
                self._note("skipped_step", f"left {tool} out of the plan")
                continue
            tool, args = self._garble(tool, args)
            out.append((tool, args))
            if not per_turn and self._roll(self.faults.repeated_step):
                self._note("repeated_step", f"{tool} twice in the plan")
                out.append((tool, dict(args)))
        for injection in self.injections:
            if injection.marker in seen and self._roll(self.faults.obeyed_injection):
                self._note("obeyed_injection", f"{injection.tool} {json.dumps(injection.args)}")
                out.append((injection.tool, dict(injection.args)))
        return out

    def _garble(self, tool: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ids = [
            k for k, v in args.items() if isinstance(v, str) and (_ID.match(v) or _EMAIL.match(v))
        ]
        if ids and self._roll(self.faults.wrong_id):
            key = self._random.choice(ids)
            others = [i for i in self.known_ids if i != args[key] and _kind(i) == _kind(args[key])]
            if others:
                new = self._random.choice(others)
                self._note("wrong_id", f"{tool}.{key}: {args[key]} -> {new}")
                args = {**args, key: new}
        if ids and self._roll(self.faults.invented_id):
            key = self._random.choice(ids)
            new = _invented(args[key], self._random)
            self._note("invented_id", f"{tool}.{key}: {args[key]} -> {new}")
            args = {**args, key: new}
        if "amount" in args and self._roll(self.faults.amount_off):
            factor = self._random.choice((10.0, 0.1, 100.0))
            new_amount = round(float(args["amount"]) * factor, 2)
            self._note("amount_off", f"{tool}.amount: {args['amount']} -> {new_amount}")
            args = {**args, "amount": new_amount}
        others = [t for t in self.tools if t != tool]
        if others and self._roll(self.faults.wrong_tool):
            new_tool = self._random.choice(others)
            self._note("wrong_tool", f"{tool} -> {new_tool}")
            tool = new_tool
        return tool, args

    def _call_mistake(self) -> MistakeKind | None:
        for kind in CALL_KINDS:
            if self._roll(getattr(self.faults, kind)):
                return kind
        return None

    def _deliver_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> AIMessage:
        kind = self._call_mistake()
        ids = [f"call-{self._calls}-{i}" for i in range(len(calls))]
        if kind == "text_instead" or not calls:
            if calls:
                self._note("text_instead", "answered in words instead of calling a tool")
            return AIMessage(content="I have taken care of it.")
        if kind == "malformed_call":
            self._note("malformed_call", f"{calls[0][0]}: arguments are not JSON")
            broken = json.dumps(calls[0][1]).replace('"', "'")[:-1]
            return AIMessage(
                content="",
                invalid_tool_calls=[
                    {"name": calls[0][0], "args": broken, "id": ids[0], "error": "not JSON",
                     "type": "invalid_tool_call"}
                ],
            )  # fmt: skip
        if kind == "cut_off_call":
            name, args = calls[0]
            kept = dict(list(args.items())[: len(args) // 2])
            self._note("cut_off_call", f"{name}: only {sorted(kept)} of {sorted(args)} arrived")
            calls = [(name, kept), *calls[1:]]
        return AIMessage(
            content="",
            tool_calls=[
                {"name": n, "args": a, "id": i, "type": "tool_call"}
                for (n, a), i in zip(calls, ids, strict=True)
            ],
        )

    def _deliver_text(self, text: str) -> AIMessage:
        kind = self._call_mistake()
        if kind == "text_instead":
            self._note("text_instead", "described the plan in words instead of handing it in")
            return AIMessage(content="I will refund the charge and let the customer know.")
        if kind == "malformed_call":
            self._note("malformed_call", "the plan is not valid JSON")
            return AIMessage(content=text.replace('"', "'"))
        if kind == "cut_off_call":
            self._note("cut_off_call", "the plan stops half-way")
            return AIMessage(content=text[: len(text) // 2])
        return AIMessage(content=text)


def _plan_of(turn: AIMessage) -> dict[str, Any] | None:
    if turn.tool_calls or not isinstance(turn.content, str):
        return None
    try:
        value = json.loads(turn.content)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "steps" in value else None


def _step(tool: str, args: dict[str, Any], cite: list[str]) -> dict[str, Any]:
    return {"tool": tool, "args": args, "purpose": "as the request asks", "evidence": cite}


def _is_id(value: str) -> bool:
    return bool(_ID.match(value) or _EMAIL.match(value))


def _kind(value: str) -> str:
    match = _ID.match(value)
    return match.group(1) if match else "email"


def _invented(value: str, rng: random.Random) -> str:
    match = _ID.match(value)
    if match:
        return f"{match.group(1)}-{rng.randint(9000, 9999)}"
    return f"user{rng.randint(100, 999)}@example.net"


__all__ = [
    "MODEL_PROFILES",
    "FallibleModel",
    "Injection",
    "Mistake",
    "ModelFaultProfile",
    "model_profile_named",
]
