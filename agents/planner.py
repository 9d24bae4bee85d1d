"""Planner: a typed Plan from a model, or from a curated runbook when there is no model.

The model is a fragile integration like any other: its timeouts and retries live in the client,
its output is validated with a bounded repair loop, a fallback model is tried next, and the
deterministic runbook planner is the last resort. Which planner ran is always in the state.

A model that can call tools is asked for its plan as a call of one tool, ``submit_plan``, whose
arguments are a :class:`PlanDraft`; one that cannot (or answers in text anyway) gives the same
object as JSON in its text. Both are validated the same way, and both are repaired the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Optional

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents import prompts
from agents.budgeted_context import Fact, Section, assemble, remember, render_memory, tokens
from agents.lookups import answer_lookups, lookup_schema, lookup_specs
from agents.models import BudgetExhausted, Meter, model_name, payer_of
from agents.outside import (
    outside_evidence,
    records_for_prompt,
    render_outside,
    retrieved,
    with_outside,
)
from agents.runbooks import fill_runbook, runbook_steps
from agents.usage import Payer
from graph.approval import thread_entities
from graph.context import KeelContext, context_of, guarded_thread
from graph.domain import Domain, EditablePlans, LooksThingsUp
from graph.state import (
    BudgetStop,
    CannotPlan,
    Conflict,
    Edit,
    Evidence,
    Plan,
    PlannerView,
    StateUpdate,
    Step,
    Verdict,
)
from retrieval.corpus import RunbookStep, load_manifest
from retrieval.curation import TIER_RANK
from tools.spec import AgentTools, HeardText, ToolRegistry

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel, LanguageModelInput

QUESTION = re.compile(
    r"\?\s*$|^(what|how|when|which|who|why|where|can|do|does|is|are|may)\b", re.IGNORECASE
)
MIN_ANSWER_SCORE = 0.3
SUBMIT_PLAN = "submit_plan"
"""The one tool the planner offers a model: calling it is how the model hands in its plan."""


class StepDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    args: dict[str, Any]
    purpose: str
    evidence: list[str] = Field(default_factory=list)
    postcondition: str = ""


class PlanDraft(BaseModel):
    """What a model may say: the effect of each step is taken from the tool spec, not from it."""

    model_config = ConfigDict(extra="forbid")

    intent: str
    steps: list[StepDraft] = Field(default_factory=list)
    answer: str | None = None
    evidence: list[str] = Field(
        default_factory=list,
        description="the chunk ids a pure answer relies on (a step cites its own)",
    )
    cannot_plan: str | None = None


LOOKED_UP = "looked_up"
"""The records' entry for what the model's look-ups returned that their owners vouch for."""

BUDGET_PLANNER = "runbook (budget exhausted)"
"""The planner a thread got when a budget refused its model and the runbook planner stood in."""
NO_PLANNER_BUDGET = "none (budget exhausted)"
"""The planner a thread got when a budget refused its model and nothing could stand in: it
escalates with the budget's account."""


def plan(
    state: PlannerView,
    runtime: Runtime[KeelContext],
    # Spelled so: LangGraph injects the run's config only for these annotations (as text, under
    # ``from __future__ import annotations``); "RunnableConfig | None" is silently not injected.
    config: Optional[RunnableConfig] = None,  # noqa: UP045
) -> StateUpdate:
    ctx = context_of(runtime)
    meter = ctx.meter or Meter(None)
    payer = payer_of(config, _thread(runtime, config), ctx.settings)
    guarded = guarded_thread(runtime)
    # The records read here vouch for arguments (kept in the guard below): they are those of the
    # request the guard recorded, not of entities a caller wrote into the state.
    entities = thread_entities(
        state.get("entities", {}),
        guarded[0].requests(guarded[1]) if guarded is not None else None,
        ctx.domain.extract_entities,
    )
    heard: list[HeardText] = []
    vouched: list[dict[str, Any]] = []
    reads = ctx.tools.for_agent("planner", heard=heard, vouched=vouched)
    records = ctx.domain.gather_records(entities, reads)
    gathered = len(vouched)
    lookups = lookup_budget(ctx)
    # What people outside the company wrote, as the tools returned it: screened, shown to the
    # model as marked data, and kept in the thread's evidence, where it taints like a wiki page.
    outside = outside_evidence(heard, ctx.clock().date())
    if guarded is not None:
        guard, thread_id = guarded
        guard.record_taint(thread_id, outside)  # it entered the thread: append-only
    thread_evidence = with_outside(state.get("evidence", []), outside)
    evidence = retrieved(thread_evidence)
    conflicts = state.get("conflicts", [])
    verdict = state.get("plan_verdict")
    feedback = verdict.reasons if verdict is not None and not verdict.ok else []
    # A reviewer's edits: the plan is derived again with their arguments fixed.
    edits = state.get("edits") or []
    pinned = {e.step: e.args for e in edits}
    if edits:
        feedback = [edit_constraint(e) for e in edits]
    # What the thread already did (a replan after steps ran, a fork after a side effect): typed
    # facts with their step and tool, side effects always kept, so the model neither repeats nor
    # contradicts them.
    memory = remember(
        state.get("results", []), {name: ctx.tools[name].effect for name in ctx.tools.names()}
    )

    result: Plan | CannotPlan | None = None
    failures: list[str] = []
    stop: BudgetStop | None = None
    for model in (ctx.planner_model, ctx.fallback_model):
        if model is None:
            continue
        try:
            result = model_plan(
                model,
                state["request"],
                entities,
                records,
                evidence,
                ctx.tools,
                feedback,
                conflicts=conflicts,
                memory=memory,
                outside=outside,
                budget=ctx.settings.planner_budget_tokens,
                memory_budget=ctx.settings.memory_budget_tokens,
                repair_attempts=ctx.settings.plan_repair_attempts,
                role=ctx.domain.planner_role,
                meter=meter,
                payer=payer,
                lookups=reads if lookups else None,
                lookup_budget=lookups,
                today=ctx.clock().date(),
            )
            break
        except BudgetExhausted as err:  # not made: the fallback model may still fit the budget
            stop = stop or err.stop
        except Exception as err:  # any model failure falls through to the next planner
            failures.append(f"{model_name(model)}: {type(err).__name__}: {err}"[:300])

    if len(heard) > len(outside):  # the model's look-ups read outside text: it taints too
        outside = outside_evidence(heard, ctx.clock().date())
        if guarded is not None:  # in the guard too, as the records' text is: append-only
            guarded[0].record_taint(guarded[1], outside)
        thread_evidence = with_outside(state.get("evidence", []), outside)
    if len(vouched) > gathered:
        # What the look-ups' owners vouch for: the trusted records an argument may come from
        # (``tools.provenance``), kept beside the domain's own.
        records = {**records, LOOKED_UP: vouched[gathered:]}
    # The records stay in the state for one reader: where each argument came from (a value a
    # trusted record holds is the record's), traced by the approval screen and by the executor's
    # gate (``tools.provenance``). No other node reads them again (the validator reads fresh ones).
    seen: StateUpdate = {"records": records, "budget_stop": stop if result is None else None}
    if guarded is not None:
        # Kept in the thread guard too, append-only: the state's copy, which a caller can write,
        # may take away from what these vouch for, never add to it.
        guarded[0].record_records(guarded[1], records)
    if outside:
        seen["evidence"] = thread_evidence
    if result is None and stop is not None and not _runbook_stands_in(state, ctx):
        return _stopped_by_budget(stop, "the runbook planner may not stand in", seen)
    if result is None:
        losers = {c.loser for c in conflicts}
        usable = [e for e in evidence if e.chunk_id not in losers]
        data = runbook_steps(load_manifest(ctx.settings.corpus_dir))
        result = runbook_plan(
            state["request"], entities, usable, records, ctx.domain, data, pinned=pinned
        )
        if stop is not None and isinstance(result, CannotPlan) and not result.temporary:
            # The request was not refused on its merits: the model that could plan it was not
            # asked. A human decides, with the account.
            return _stopped_by_budget(stop, f"the runbook planner cannot: {result.reason}", seen)
        if stop is not None:
            result = result.model_copy(update={"planner": BUDGET_PLANNER})
        elif failures:
            result = result.model_copy(update={"planner": "runbook (model failed)"})
    if edits:
        derived = with_edits(result, edits) if isinstance(result, Plan) else result
        if isinstance(derived, CannotPlan):
            # The edit is refused, with its reason; the plan shown before it is asked again.
            return {
                "plan": without_edits(state.get("plan"), edits),
                "edits": [],
                "review_note": f"the edit by {edits[0].by} was refused: {derived.reason}",
                **seen,
            }
        return {"plan": derived, "planner": derived.planner, **seen}
    if isinstance(result, CannotPlan) and result.temporary:
        # Not a refusal: the request may be fine, a system it needs is down. A human decides.
        verdict = Verdict(stage="plan", ok=False, reasons=[result.reason])
        return {"plan": None, "plan_verdict": verdict, "planner": result.planner, **seen}
    if isinstance(result, CannotPlan):
        return {
            "plan": None,
            "status": "refused",
            "planner": result.planner,
            "answer": f"Refused: {result.reason}.",
            **seen,
        }
    return {"plan": result, "planner": result.planner, **seen}


def _thread(runtime: Runtime[KeelContext], config: RunnableConfig | None) -> str:
    info = runtime.execution_info
    if info is not None and info.thread_id:
        return info.thread_id
    return str(((config or {}).get("configurable") or {}).get("thread_id") or "unthreaded")


def lookup_budget(ctx: KeelContext) -> int:
    """How many look-ups the model planner may make (``agents.lookups``): the setting when
    given, else the domain's own ``planner_lookups``, else none."""
    if ctx.settings.planner_lookups is not None:
        return ctx.settings.planner_lookups
    return ctx.domain.planner_lookups if isinstance(ctx.domain, LooksThingsUp) else 0


def _runbook_stands_in(state: PlannerView, ctx: KeelContext) -> bool:
    """Whether the free runbook planner may plan instead of a model a budget refused.

    Only before the thread did anything: the runbook planner has no working memory, so on a
    replan after a step ran it could plan that step again. And not when the settings say to
    escalate (``KEEL_BUDGET_EXHAUSTED=escalate``).
    """
    return ctx.settings.budget_exhausted == "runbook" and not state.get("results")


def _stopped_by_budget(stop: BudgetStop, why: str, seen: StateUpdate) -> StateUpdate:
    """No plan: the escalation says which budget stopped the model, and what was spent on what."""
    reason = f"budget exhausted: {stop.describe()}; {why}"
    verdict = Verdict(stage="plan", ok=False, reasons=[reason])
    return {"plan": None, "plan_verdict": verdict, "planner": NO_PLANNER_BUDGET, **seen,
            "budget_stop": stop}  # fmt: skip


def runbook_plan(
    request: str,
    entities: dict[str, str],
    evidence: list[Evidence],
    records: dict[str, Any],
    domain: Domain,
    data: Mapping[str, Sequence[RunbookStep]] | None = None,
    pinned: Mapping[int, Mapping[str, Any]] | None = None,
) -> Plan | CannotPlan:
    """The deterministic planner: the first retrieved runbook that fits, or an answer from policy.

    A runbook fits when the request uses one of its keywords and names every entity it needs.
    A runbook with steps as data (``data``: source id to steps, from the corpus manifest) is
    filled here; any other is the domain's to fill. Records the domain could not read stop both.
    ``pinned`` (a reviewer's edit: step index to arguments) fixes arguments: a data runbook is
    filled with them (``fill_runbook``), a domain's with ``EditablePlans`` when it has it.
    """
    text = request.lower()
    for runbook in (e for e in evidence if e.kind == "runbook"):
        if any(k.lower() in text for k in runbook.keywords) and all(
            r in entities for r in runbook.requires
        ):
            steps = (data or {}).get(runbook.source)
            if not steps:
                if pinned and isinstance(domain, EditablePlans):
                    return domain.runbook_plan_edited(runbook, request, entities, records, pinned)
                return domain.runbook_plan(runbook, request, entities, records)
            if records.get("unavailable"):
                reason = "cannot read the records: " + "; ".join(records["unavailable"])
                return CannotPlan(reason=reason, temporary=True)
            if records.get("missing"):
                return CannotPlan(reason="unknown record: " + "; ".join(records["missing"]))
            return fill_runbook(runbook, steps, entities, records, pinned)
    if QUESTION.search(request.strip()):
        sources = sorted(
            (e for e in evidence if e.kind != "runbook" and e.score >= MIN_ANSWER_SCORE),
            key=lambda e: (TIER_RANK[e.trust_tier], -e.score),
        )
        if sources:
            best = sources[0]
            return Plan(
                intent="answer_question",
                answer=f"{best.text} (source: {best.title}, {best.trust_tier}, "
                f"effective {best.effective_date})",
                evidence=[best.chunk_id],
            )
    return CannotPlan(reason="no runbook or policy covers this request")


def edit_constraint(edit: Edit) -> str:
    """What a model planner is told about a reviewer's edit."""
    return prompts.PLANNER_EDIT.format(
        step=edit.step + 1,
        tool=edit.tool,
        args=json.dumps(edit.args, sort_keys=True, default=str),
        before=json.dumps(edit.before, sort_keys=True, default=str),
    )


def with_edits(plan: Plan, edits: Sequence[Edit]) -> Plan | CannotPlan:
    """The plan derived again, with each edit's arguments set on its step exactly (what the
    reviewer gave is what runs), or why the plan cannot take them.

    Example:
        >>> from graph.state import Step
        >>> step = Step(tool="ship", args={"qty": 1}, purpose="Ship 1", effect="write")
        >>> edit = Edit(step=0, tool="ship", before={"qty": 1}, args={"qty": 2}, by="ann")
        >>> with_edits(Plan(intent="x", steps=[step]), [edit]).steps[0].args
        {'qty': 2}
        >>> with_edits(Plan(intent="x", steps=[]), [edit]).reason
        'the plan derived again has no step 1 (ship) to take the edit'
    """
    steps = list(plan.steps)
    for edit in edits:
        if not (0 <= edit.step < len(steps)) or steps[edit.step].tool != edit.tool:
            return CannotPlan(
                reason=f"the plan derived again has no step {edit.step + 1} ({edit.tool}) to "
                "take the edit",
                planner=plan.planner,
            )
        steps[edit.step] = steps[edit.step].model_copy(update={"args": edit.args})
    return plan.model_copy(update={"steps": steps})


def without_edits(plan: Plan | None, edits: Sequence[Edit]) -> Plan | None:
    """The plan as it was shown before the edits (their steps' arguments put back)."""
    if plan is None:
        return None
    steps = list(plan.steps)
    for edit in edits:
        if 0 <= edit.step < len(steps) and steps[edit.step].tool == edit.tool:
            steps[edit.step] = steps[edit.step].model_copy(update={"args": edit.before})
    return plan.model_copy(update={"steps": steps})


def model_plan(
    model: BaseChatModel,
    request: str,
    entities: dict[str, str],
    records: dict[str, Any],
    evidence: list[Evidence],
    tools: ToolRegistry,
    feedback: list[str],
    *,
    repair_attempts: int,
    conflicts: Sequence[Conflict] = (),
    memory: Sequence[Fact] = (),
    outside: Sequence[Evidence] = (),
    budget: int = 4000,
    memory_budget: int = 600,
    role: str = "an operations team",
    meter: Meter | None = None,
    payer: Payer | None = None,
    lookups: AgentTools | None = None,
    lookup_budget: int = 0,
    today: date | None = None,
) -> Plan | CannotPlan:
    """Ask a chat model for a plan; a malformed answer is sent back, a bounded number of times.

    Every call, repairs included, goes through ``meter`` (an unmetered one when None), charged
    to ``payer``. With ``lookups`` (the planner's own handle on the tools) and a
    ``lookup_budget``, the model may first call the read tools granted to the planner, at most
    that many times (``agents.lookups``); their outside text lands in ``lookups.heard``.

    Raises:
        BudgetExhausted: a budget refused a call (the first, or a repair); it was not made.
        ValueError: the model gave no valid plan within the repair budget.
        Exception: whatever the model client raised (timeouts, connection errors, ...).
    """
    meter = meter or Meter(None)
    payer = payer or Payer(thread_id="unthreaded", user="unknown", team="unknown")
    name = f"model:{model_name(model)}"
    messages = planner_messages(
        request, entities, records, evidence, tools, feedback, conflicts, memory,
        budget=budget, memory_budget=memory_budget, role=role, outside=outside,
    )  # fmt: skip
    offered = lookup_specs(tools) if lookups is not None and lookup_budget > 0 else []
    remaining = lookup_budget if offered else 0
    if offered:
        messages.append(HumanMessage(prompts.PLANNER_LOOKUPS.format(budget=lookup_budget)))
    error = ""
    repairs = 0
    # Each turn either looks things up (bounded by the budget) or answers (bounded by repairs).
    while repairs <= repair_attempts:
        extra = [lookup_schema(s) for s in offered] if remaining > 0 else []
        planner = asking_for_a_plan(model, extra)
        # Counted even where a fake ignores them: an estimate errs high.
        schemas = [submit_plan_tool(), *extra]
        reply = meter.invoke(
            planner, messages, model=model_name(model), role="planner", payer=payer, tools=schemas
        )
        if (
            extra
            and lookups is not None
            and isinstance(reply, AIMessage)
            and reply.tool_calls
            and SUBMIT_PLAN not in {c["name"] for c in reply.tool_calls}
        ):
            answers, remaining = answer_lookups(
                reply, lookups, offered, _heard(lookups), today or date.today(), remaining
            )
            messages += [reply, *answers]
            continue
        repairs += 1
        try:
            draft = plan_draft(reply)
        except (ValidationError, ValueError) as err:
            error = str(err).splitlines()[0][:300]
            messages += repair_messages(reply, error)
            continue
        if draft.cannot_plan:
            return CannotPlan(reason=draft.cannot_plan, planner=name)
        return Plan(
            intent=draft.intent,
            answer=draft.answer,
            planner=name,
            # An answer cites at the top level (the validator checks it); a step in the step.
            evidence=sorted({*draft.evidence, *(c for s in draft.steps for c in s.evidence)}),
            steps=[
                Step(
                    tool=s.tool,
                    args=s.args,
                    purpose=s.purpose,
                    evidence=s.evidence,
                    postcondition=s.postcondition,
                    # An unknown tool is treated as the most dangerous; the validator refuses it.
                    effect=tools[s.tool].effect if s.tool in tools else "irreversible",
                )
                for s in draft.steps
            ],
        )
    raise ValueError(f"no valid plan after {repair_attempts + 1} answers: {error}")


def planner_messages(
    request: str,
    entities: dict[str, str],
    records: dict[str, Any],
    evidence: Sequence[Evidence],
    tools: ToolRegistry,
    feedback: Sequence[str] = (),
    conflicts: Sequence[Conflict] = (),
    memory: Sequence[Fact] = (),
    *,
    budget: int,
    memory_budget: int = 600,
    role: str = "an operations team",
    outside: Sequence[Evidence] = (),
) -> list[BaseMessage]:
    """The planner's prompt: a fixed system part, then sections that shrink to fit ``budget``.

    Evidence shrinks first (lowest-ranked chunk first), then records and outside text, then
    memory. Outside text (``agents.outside``) has its own marked section; the records point at it.
    ``role`` is the domain's ``planner_role`` (who the planner works for).
    """
    system = prompts.PLANNER_SYSTEM.format(role=role, tools=json.dumps(tools.catalog(), indent=1))
    sections = [
        Section("request", prompts.PLANNER_REQUEST.format(request=request), 0),
        Section("entities", prompts.PLANNER_ENTITIES.format(entities=json.dumps(entities)), 0),
        Section(
            "records",
            prompts.PLANNER_RECORDS.format(
                records="\n".join(
                    f"{k}: {json.dumps(v)}" for k, v in records_for_prompt(records, outside).items()
                )
                or "none"
            ),
            2,
        ),
        Section("outside", prompts.PLANNER_OUTSIDE.format(outside=render_outside(outside)), 2),
        Section(
            "memory",
            prompts.PLANNER_MEMORY.format(memory=render_memory(memory, memory_budget)),
            1,
        ),
        Section(
            "evidence",
            prompts.PLANNER_EVIDENCE.format(
                evidence="\n".join(
                    f"[{e.chunk_id}] ({e.trust_tier}, {e.effective_date}) {e.text}"
                    for e in evidence
                )
                or "none"
            ),
            3,
        ),
        Section(
            "conflicts",
            prompts.PLANNER_CONFLICTS.format(
                conflicts="\n".join(
                    f"- {c.topic}: [{c.winner}] says {c.winner_says}, [{c.loser}] says "
                    f"{c.loser_says}; {c.winner} wins ({c.why}). Do not rely on {c.loser}."
                    for c in conflicts
                )
                or "none"
            ),
            0,
        ),
    ]
    if feedback:
        reasons = "\n".join(feedback)
        sections.append(Section("feedback", prompts.PLANNER_FEEDBACK.format(reasons=reasons), 0))
    user = assemble(sections, budget - tokens(system))
    return [SystemMessage(system), HumanMessage(user.text)]


def submit_plan_tool() -> dict[str, Any]:
    """The ``submit_plan`` tool in OpenAI's format; its parameters are ``PlanDraft``'s schema."""
    tool = convert_to_openai_tool(PlanDraft)
    tool["function"]["name"] = SUBMIT_PLAN
    tool["function"]["description"] = prompts.SUBMIT_PLAN_DESCRIPTION
    return tool


def _heard(tools: AgentTools) -> list[HeardText]:
    return tools.heard if tools.heard is not None else []


def asking_for_a_plan(
    model: BaseChatModel, lookups: Sequence[dict[str, Any]] = ()
) -> Runnable[LanguageModelInput, BaseMessage]:
    """The model with ``submit_plan`` bound and required, or as it is when it cannot call tools.

    With ``lookups`` (tool schemas), those are bound beside it and the model must call one of
    them or ``submit_plan`` (``tool_choice="any"``).

    Tagged ``nostream``: a chat client shows Keel's answer, not the plan's JSON.
    ``tool_choice`` is the tool's name, the form every LangChain chat model accepts; ChatOpenAI
    sends it as ``{"type": "function", "function": {"name": "submit_plan"}}``. Not ``strict``:
    a step's ``args`` is a free object, which OpenAI's strict schemas do not allow.
    """
    try:
        bound: Runnable[LanguageModelInput, BaseMessage] = model.bind_tools(
            [submit_plan_tool(), *lookups], tool_choice="any" if lookups else SUBMIT_PLAN
        )
    except NotImplementedError:  # langchain-core's fakes, replay's recorded model
        bound = model
    # A chat client streaming the run's messages (Agent Chat UI, Studio's chat) shows every model
    # call made inside a node; the plan is Keel's working, not its answer to the user.
    return bound.with_config(tags=[TAG_NOSTREAM])


def plan_draft(reply: BaseMessage) -> PlanDraft:
    """The plan in a model's reply: the ``submit_plan`` call's arguments, else JSON in the text.

    Raises:
        ValueError: the tool call is malformed (arguments that are not JSON, another tool, more
            than one call) or the JSON text is missing; ``ValidationError`` (a ``ValueError``):
            the plan does not fit ``PlanDraft``.
    """
    if isinstance(reply, AIMessage) and (reply.tool_calls or reply.invalid_tool_calls):
        for broken in reply.invalid_tool_calls:
            raise ValueError(f"the arguments of your {broken.get('name')} call are not valid JSON")
        names = [c["name"] for c in reply.tool_calls]
        if names != [SUBMIT_PLAN]:
            raise ValueError(f"call {SUBMIT_PLAN} exactly once, not {', '.join(names)}")
        return PlanDraft.model_validate(reply.tool_calls[0]["args"])
    return PlanDraft.model_validate_json(_json_body(reply))


def repair_messages(reply: BaseMessage, error: str) -> list[BaseMessage]:
    """What goes back to the model after a malformed answer: its answer, then the error.

    Each of its tool calls is answered with a tool message first (OpenAI refuses a conversation
    where a tool call has no answer), then the repair request itself.
    """
    calls = [*reply.tool_calls, *reply.invalid_tool_calls] if isinstance(reply, AIMessage) else []
    answers: list[BaseMessage] = [
        ToolMessage(f"refused: {error}", tool_call_id=str(c["id"]), status="error")
        for c in calls
        if c.get("id")
    ]
    return [reply, *answers, HumanMessage(prompts.PLANNER_REPAIR.format(error=error))]


def _json_body(reply: BaseMessage) -> str:
    content = reply.content if isinstance(reply, AIMessage) else reply.text
    text = (
        content
        if isinstance(content, str)
        else "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    )
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    return (fenced.group(1) if fenced else text).strip()
