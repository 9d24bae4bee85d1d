"""Keel from Python in a few calls: run a request, answer its approval, look at a thread.

The CLI, the demo, the notebooks and the tests all go through this one class.

Example:
    >>> from keel.app import KeelApp
    >>> with KeelApp.open() as app:  # doctest: +SKIP
    ...     outcome = app.run("Ship order ORD-7 to the customer")
    ...     outcome.status
    'awaiting_approval'
    ...     app.resume(outcome.thread_id, Decision(kind="approve")).status
    'done'
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlparse

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graph.approval import Decision, approval_answer
from graph.builder import build_graph, graph_version
from graph.context import KeelContext
from graph.domain import Domain
from graph.run_input import check_resume, check_run_input
from graph.state import (
    BudgetStop,
    Conflict,
    DomainEvent,
    Escalation,
    EventWait,
    Evidence,
    Filtered,
    Plan,
    ToolOutcome,
    Verdict,
)
from graph.status import ThreadBook, ThreadStanding, ThreadStatus, open_thread_book, thread_status
from graph.waits import dispatch_events
from graph.wire import ApprovalRequest, approval_request_of, event_wait_of
from keel.errors import (
    BadRequest,
    ConfigError,
    KeelError,
    LeaseHeld,
    NoPendingApproval,
    StoreUnavailable,
    ThreadNotFound,
)
from keel.settings import Settings
from observability.otel import otel_from_environment
from observability.record_events import (
    ApprovalAnswered,
    ApprovalRequested,
    CheckpointSaved,
    EventAwaited,
    RunEnded,
    RunStarted,
)
from observability.recorder import Recorder, RunRecording, jsonable, model_name
from observability.records import open_record
from observability.redaction import Redactor
from observability.tracing import Tracing, run_config
from stores.backends import open_stores
from stores.flight_record import FlightRecord, NoRecord, RunNotFound
from stores.guard import Guard
from stores.inbox import Inbox
from stores.leases import Leases
from stores.ledger import Ledger
from tools.spec import ToolRegistry

Mode = Literal["run", "resume", "recover", "fork", "event"]


class PendingAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    args: dict[str, Any]
    description: str
    digest: str


class Outcome(BaseModel):
    """Where a thread stands: the JSON that ``keel ... --json`` prints."""

    model_config = ConfigDict(extra="forbid")

    thread_id: str
    status: ThreadStatus
    stalled_at: str | None = Field(
        default=None, description="stalled or running: the node the run stopped (or is) in"
    )
    owner: str | None = Field(default=None, description="running: the worker holding its lease")
    planner: str
    run_id: str | None = Field(default=None, description="the flight record's run id")
    answer: str = ""
    pending: list[PendingAction] | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    filtered: list[Filtered] = Field(default_factory=list)
    conflicts: list[Conflict] = Field(default_factory=list)
    plan: Plan | None = None
    plan_verdict: Verdict | None = None
    results: list[ToolOutcome] = Field(default_factory=list)
    escalation: Escalation | None = None
    waiting: EventWait | None = None
    budget_stop: BudgetStop | None = Field(
        default=None, description="a budget refused the planner's model: which, and the account"
    )


class ThreadRecovery(BaseModel):
    """One thread of ``keel recover --all``: where it stood and what became of it."""

    model_config = ConfigDict(extra="forbid")

    thread_id: str
    before: ThreadStatus
    stalled_at: str | None = None
    after: ThreadStatus | None = Field(default=None, description="its status after recover")
    refused: str | None = Field(default=None, description="why not: a live worker holds it")
    error: str | None = Field(default=None, description="recover failed: the one-line error")


class RecoveryReport(BaseModel):
    """What ``keel recover --all`` found and did; ``complete`` when nothing is left stalled."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(default=0, description="threads in the checkpointer")
    by_status: dict[str, int] = Field(default_factory=dict, description="before recovering")
    stalled: int = 0
    recovered: int = Field(default=0, description="no longer stalled: finished or waiting")
    still_stalled: int = 0
    refused: int = Field(default=0, description="held by a live worker, left to it")
    failed: int = 0
    results: list[ThreadRecovery] = Field(default_factory=list)

    def add(self, item: ThreadRecovery) -> None:
        self.results.append(item)
        self.stalled += item.before == "stalled"
        if item.refused is not None:
            self.refused += 1
        elif item.error is not None:
            self.failed += 1
        elif item.after == "stalled":
            self.still_stalled += 1
        else:
            self.recovered += 1

    @property
    def complete(self) -> bool:
        return self.refused == self.failed == self.still_stalled == 0


@dataclass(frozen=True)
class OpenedStores:
    """Everything a run writes durably, as ``KeelApp.open`` opened it (from
    ``stores.backends.open_stores``) and hands it to ``wrap_stores``.

    Attributes:
        checkpointer: the LangGraph saver (checkpoints and pending writes).
        ledger: the intent ledger of irreversible calls.
        inbox: the event inbox (subscriptions, deliveries, the relay's cursor).
        tools: the tool registry, whose specs call the backends.
        records: the flight recorder's store (None with ``KEEL_RECORD`` off).
        leases: the runs' leases (owner, heartbeat), beside the checkpoints.
    """

    checkpointer: BaseCheckpointSaver[str]
    ledger: Ledger | None
    inbox: Inbox | None
    tools: ToolRegistry
    records: FlightRecord | None
    leases: Leases | None
    guard: Guard | None = None
    """The thread guard: receipts consumed, rejections, taint, the requester, event deliveries."""


StoreWrapper = Callable[[OpenedStores], OpenedStores]
"""Given the stores ``KeelApp.open`` built from the settings, the stores the app uses instead.

The crash sweep (``evals.crash_sweep``) counts every durable write through it; nothing in the
product passes one.
"""


class KeelApp:
    """A compiled graph on the configured checkpointer, with its runtime context.

    With ``settings.record`` (the default) every run is written to the flight recorder
    (``observability``); with LangSmith's environment variables set, every run is traced too.
    With ``leases`` (``open`` gives them), every segment holds the thread's lease: a second
    worker is refused (``LeaseHeld``) while the first is alive.
    """

    def __init__(
        self,
        settings: Settings,
        context: KeelContext,
        graph: Any,
        *,
        recorder: Recorder | None = None,
        tracing: Tracing | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.graph = graph
        self.recorder = recorder
        self.tracing = tracing
        self.leases = leases
        self.threads = (
            ThreadBook(graph, graph.checkpointer, leases)
            if leases is not None and graph.checkpointer is not None
            else None
        )

    @classmethod
    @contextmanager
    def open(
        cls,
        settings: Settings | None = None,
        context: KeelContext | None = None,
        *,
        nodes: Mapping[str, Callable[..., Any]] | None = None,
        wrap_stores: StoreWrapper | None = None,
        domain: Domain | None = None,
    ) -> Iterator[KeelApp]:
        """Open the configured checkpointer and compile the graph on it.

        ``nodes`` replaces agent nodes by name (see ``graph.build_graph``). ``wrap_stores``
        replaces the durable stores built from the settings by wrappers around them (see
        ``OpenedStores``); the crash sweep uses it to die at every write. ``domain``: the domain
        the caller already built from the settings (the context is built with it), when there is
        no ``context``.
        """
        settings = settings or (context.settings if context else Settings())
        configured = open_stores(settings)
        context = context or KeelContext.from_settings(settings, domain=domain, stores=configured)
        redactor = Redactor.from_settings(settings)
        tracing = Tracing(redactor)
        otel = otel_from_environment()
        records: FlightRecord | None = configured.flight_record if settings.record else None
        if records is None and otel is not None:
            records = NoRecord()  # spans are made from the record's events: kept nowhere
        try:
            with configured.open_checkpointer() as opened:
                leases = configured.open_leases(opened)
                ctx = context
                stores = OpenedStores(
                    opened, ctx.ledger, ctx.inbox, ctx.tools, records, leases, ctx.guard
                )
                if wrap_stores is not None:
                    stores = wrap_stores(stores)
                    context = replace(
                        context, ledger=stores.ledger, inbox=stores.inbox, tools=stores.tools,
                        guard=stores.guard,
                    )  # fmt: skip
                recorder = None
                if stores.records is not None:
                    sinks = [otel.on_event] if otel is not None else []
                    recorder = Recorder(stores.records, redactor, sinks=sinks)
                    context = recorder.instrument(context)
                graph = build_graph(stores.checkpointer, nodes=nodes)
                try:
                    yield cls(
                        settings, context, graph,
                        recorder=recorder, tracing=tracing, leases=stores.leases,
                    )  # fmt: skip
                finally:
                    leases.close()
        finally:
            tracing.flush()
            if otel is not None:
                otel.flush()
            if records is not None:
                records.close()
            # The stores opened here (their files and shared pools); a context the caller gave
            # keeps its own, which are the caller's to close.
            configured.close()

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {
            "configurable": {"thread_id": thread_id},
            "recursion_limit": self.settings.recursion_limit,
            "run_name": "keel",
            "metadata": {"thread_id": thread_id},
        }

    def invoke_segment(
        self,
        payload: Any,
        thread_id: str,
        mode: Mode,
        *,
        request: str | None = None,
        run_id: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Outcome:
        """One segment of a run (the first invoke, a resume, a recover or a fork), recorded and
        traced, holding the thread's lease. A fork starts a new run in the record: its earlier
        history is the old run's.

        Raises:
            LeaseHeld: another live worker is running the thread.
            BadRequest: the input (or resume value) could not be stored and read back
                (``graph.run_input``); nothing is written.
        """
        if isinstance(payload, Command):
            if payload.resume is not None:
                check_resume(payload.resume)
        else:
            check_run_input(payload)
        with self._lease(thread_id):
            return self._segment(
                payload, thread_id, mode, request=request, run_id=run_id,
                checkpoint_id=checkpoint_id,
            )  # fmt: skip

    @contextmanager
    def _lease(self, thread_id: str) -> Iterator[None]:
        if self.leases is None:
            yield
            return
        with _thread_named(thread_id), self.leases.hold(thread_id):
            yield

    def _segment(
        self,
        payload: Any,
        thread_id: str,
        mode: Mode,
        *,
        request: str | None = None,
        run_id: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Outcome:
        if run_id is None:
            known = self.recorder.flight_record.latest_run(thread_id) if self.recorder else None
            fresh = mode in ("run", "fork") or known is None
            run_id = str(uuid.uuid4()) if fresh or known is None else known
        trace_id = str(uuid.uuid4())
        self._begin_redaction(run_id, thread_id, mode)
        recording = (
            self.recorder.start(run_id=run_id, thread_id=thread_id, trace_id=trace_id)
            if self.recorder is not None
            else None
        )
        callbacks = self.tracing.callbacks() if self.tracing else []
        if self.recorder is not None:
            callbacks.append(self.recorder.callback())
        config = run_config(
            thread_id=thread_id,
            run_id=run_id,
            segment=recording.segment if recording else 0,
            trace_id=trace_id,
            callbacks=callbacks,
            recursion_limit=self.settings.recursion_limit,
        )
        if checkpoint_id is not None:
            config["configurable"]["checkpoint_id"] = checkpoint_id
        started = time.perf_counter()
        try:
            if recording is not None:
                self._started(recording, mode, request, trace_id, payload, checkpoint_id)
            for part in self.graph.stream(
                payload,
                config,
                context=self.context,
                durability="sync",
                stream_mode="checkpoints",
            ):
                if recording is not None:
                    _checkpointed(recording, part)
            snapshot = self._snapshot(thread_id)
            outcome = self.show(thread_id, snapshot).model_copy(update={"run_id": run_id})
            if recording is not None:
                for intr in snapshot.interrupts:
                    if (wait := event_wait_of(intr.value)) is not None:
                        recording.emit(EventAwaited(interrupt_id=intr.id, waiting=wait))
                    elif (asked := approval_request_of(intr.value)) is not None:
                        recording.emit(ApprovalRequested(interrupt_id=intr.id, request=asked))
                recording.emit(
                    RunEnded(status=outcome.status, answer=outcome.answer, duration_ms=_ms(started))
                )
        except BaseException as err:
            if recording is not None:
                recording.emit(
                    RunEnded(
                        status="error",
                        duration_ms=_ms(started),
                        error=f"{type(err).__name__}: {err}"[:500],
                    )
                )
            if isinstance(err, StoreUnavailable) and err.thread_id is None:
                raise err.for_thread(thread_id) from err.__cause__
            raise
        finally:
            if self.recorder is not None:
                self.recorder.stop()
        return outcome

    def _begin_redaction(self, run_id: str, thread_id: str, mode: Mode) -> None:
        """Redact for this run: what its earlier segments saw under a sensitive key (the
        thread's state holds it, even when they ran in another process) is scrubbed from now on."""
        redactors = {
            id(r): r
            for r in (
                self.recorder.redactor if self.recorder else None,
                self.tracing.redactor if self.tracing else None,
            )
            if r is not None
        }
        state = None if mode == "run" else self.graph.get_state(self._config(thread_id)).values
        for redactor in redactors.values():
            redactor.begin(run_id)
            if state:
                redactor.learn(jsonable(state))

    def _started(
        self,
        recording: RunRecording,
        mode: Mode,
        request: str | None,
        trace_id: str,
        payload: Any,
        checkpoint_id: str | None = None,
    ) -> None:
        ctx = self.context
        gate = ctx.tools.gate
        recording.emit(
            RunStarted(
                mode=mode,
                request=request,
                from_checkpoint=checkpoint_id,
                resume_value=(
                    payload.resume
                    if mode == "event"
                    and isinstance(payload, Command)
                    and isinstance(payload.resume, dict)
                    else None
                ),
                trace_id=trace_id,
                planner_model=model_name(ctx.planner_model) if ctx.planner_model else None,
                fallback_model=model_name(ctx.fallback_model) if ctx.fallback_model else None,
                manifest_version=gate.version if gate is not None else None,
                graph_version=graph_version(),
            )
        )
        if mode == "resume" and isinstance(payload, Command) and isinstance(payload.resume, dict):
            recording.emit(ApprovalAnswered(answer=payload.resume))

    def preflight(self) -> None:
        """Fail before a thread exists when the set-up cannot serve a run."""
        self.context.prepare()
        if self.context.planner_model is not None and self.settings.openai_base_url:
            probe_endpoint(self.settings.openai_base_url)

    def run(self, request: str, thread_id: str | None = None) -> Outcome:
        """Run a request until it is done or needs a human."""
        if not isinstance(request, str) or not request.strip():
            raise BadRequest("the request is empty")
        self.preflight()
        thread_id = thread_id or str(uuid.uuid4())
        # Not _snapshot: an outage here has no thread to name, none exists yet.
        if self.graph.get_state(self._config(thread_id)).values:
            raise BadRequest(f"thread {thread_id} already exists; use resume or a new id")
        return self.invoke_segment({"request": request}, thread_id, "run", request=request)

    def _snapshot(self, thread_id: str, checkpoint_id: str | None = None) -> Any:
        """The thread's state (at a checkpoint); a database outage names the thread."""
        config = self._config(thread_id)
        if checkpoint_id is not None:
            config["configurable"]["checkpoint_id"] = checkpoint_id
        with _thread_named(thread_id):
            return self.graph.get_state(config)

    def standing(self, thread_id: str, snapshot: Any = None) -> ThreadStanding:
        """The thread's true status, from its checkpoint and its lease (``graph.status``);
        ``snapshot`` is its latest state when the caller has just read it.

        Example:
            >>> app.standing(thread_id).status  # a worker died mid-run  # doctest: +SKIP
            'stalled'
        """
        with _thread_named(thread_id):
            if self.threads is not None:
                return self.threads.standing(thread_id, snapshot)
            if snapshot is None:
                snapshot = self.graph.get_state(self._config(thread_id))
            return thread_status(snapshot, thread_id)

    def show(self, thread_id: str, snapshot: Any = None) -> Outcome:
        """Where the thread stands: its status, what it found, planned, did and waits for
        (``snapshot``: its latest state, when the caller has just read it)."""
        if snapshot is None:
            snapshot = self._snapshot(thread_id)
        if not snapshot.values:
            raise ThreadNotFound(f"no thread {thread_id}")
        run_id = self.recorder.flight_record.latest_run(thread_id) if self.recorder else None
        return outcome_of(thread_id, snapshot, self.standing(thread_id, snapshot), run_id)

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's checkpoints, newest first: id, the node that wrote it, what runs next."""
        config = self._config(thread_id)
        with _thread_named(thread_id):
            rows = [
                {
                    "checkpoint_id": s.config["configurable"]["checkpoint_id"],
                    "step": s.metadata.get("step") if s.metadata else None,
                    "next": list(s.next),
                    "created_at": s.created_at,
                }
                for s in self.graph.get_state_history(config)
            ]
        if not rows:
            raise ThreadNotFound(f"no thread {thread_id}")
        return rows

    def recover(self, thread_id: str) -> Outcome:
        """Continue a run that stopped without finishing (its worker crashed or was killed).

        The run goes on from its last checkpoint, applying the writes a task saved there before
        the worker died (``graph.invoke(None)`` does). An irreversible step that was under way
        is issued again with the same idempotency key, so the backend answers with the first
        result instead of acting twice. The thread's lease is taken before its status is read,
        so two recovers (or a recover and a live worker) never run it at once.

        Raises:
            ThreadNotFound: no such thread.
            BadRequest: it is waiting for an approval or an event, or it has finished.
            LeaseHeld: a live worker is running it.

        Example:
            >>> app.recover(thread_id).status  # after its worker was killed  # doctest: +SKIP
            'done'
        """
        with self._lease(thread_id):
            found = self.standing(thread_id)
            if found.status in ("awaiting_approval", "awaiting_event"):
                raise BadRequest(
                    f"thread {thread_id} is waiting: for an approval (`keel resume`) "
                    "or an event (`keel events`)"
                )
            if found.ended:
                raise BadRequest(
                    f"thread {thread_id} has finished ({found.status}); nothing to recover"
                )
            return self._segment(None, thread_id, "recover")

    def stalled(self) -> list[ThreadStanding]:
        """Every thread whose worker stopped mid-run (no live lease), newest first."""
        return [t for t in self._standings() if t.status == "stalled"]

    def _standings(self) -> Iterator[ThreadStanding]:
        if self.threads is None:
            raise ConfigError("listing threads needs the app opened on a checkpointer")
        yield from self.threads.standings()

    def recover_all(self, progress: Callable[[ThreadRecovery], None] | None = None) -> (
        RecoveryReport
    ):  # fmt: skip
        """Find every stalled thread in the checkpointer and recover each one (after a crash,
        an operator needs no thread ids). A thread a live worker holds is left to it.

        Args:
            progress: called with each thread's result as soon as it is known.

        Example:
            >>> report = app.recover_all()  # doctest: +SKIP
            >>> report.stalled, report.recovered, report.refused, report.failed  # doctest: +SKIP
            (2, 2, 0, 0)
        """
        if self.threads is None:
            raise ConfigError("recover --all needs the app opened on a checkpointer")
        report = RecoveryReport()
        for thread_id in self.threads.thread_ids():
            report.threads += 1
            try:
                found = self.standing(thread_id)
            except ThreadNotFound:
                continue
            report.by_status[found.status] = report.by_status.get(found.status, 0) + 1
            if found.status not in ("stalled", "running"):
                continue
            item = ThreadRecovery(
                thread_id=thread_id, before=found.status, stalled_at=found.stalled_at
            )
            try:
                item.after = self.recover(thread_id).status
            except LeaseHeld as err:
                item.refused = str(err)
            except (KeelError, ValidationError) as err:
                item.error = f"{type(err).__name__}: {err}".splitlines()[0]
            report.add(item)
            if progress is not None:
                progress(item)
        return report

    def fork(self, thread_id: str, checkpoint_id: str) -> Outcome:
        """Run the thread again from an earlier checkpoint (time travel).

        LangGraph continues from that checkpoint on a new branch of the same thread; the old
        branch stays in ``history``. Idempotency keys and approval receipts are bound to the
        thread, so an irreversible step the old branch already made is answered by the backend
        with its first result, not made twice. In the flight record the fork is a new run.

        Example:
            >>> rows = app.history(thread_id)  # doctest: +SKIP
            >>> before = next(r for r in rows if r["next"] == ["approve"])  # doctest: +SKIP
            >>> app.fork(thread_id, before["checkpoint_id"]).status  # doctest: +SKIP
            'awaiting_approval'
        """
        snapshot = self._snapshot(thread_id, checkpoint_id)
        if not snapshot.values:
            raise ThreadNotFound(f"thread {thread_id} has no checkpoint {checkpoint_id}")
        if not snapshot.next:
            raise BadRequest(f"checkpoint {checkpoint_id} is the end of the thread; nothing to run")
        return self.invoke_segment(None, thread_id, "fork", checkpoint_id=checkpoint_id)

    def dispatch_events(self) -> list[dict[str, Any]]:
        """Wake the threads waiting for the domain's new events (``keel events``).

        Example:
            >>> app.dispatch_events()  # after the carrier delivered P-1  # doctest: +SKIP
            [{'seq': 1, 'type': 'parcel.delivered', 'key': 'P-1', 'woke': ['t-1']}]
        """

        def resume(thread_id: str, event: DomainEvent) -> None:
            self.invoke_segment(Command(resume={"event": event.model_dump()}), thread_id, "event")

        def waiting(thread_id: str) -> bool:
            return self.show(thread_id).status == "awaiting_event"

        return dispatch_events(self.context, resume, waiting)

    def resume(self, thread_id: str, decision: Decision) -> Outcome:
        """Answer the pending approval, bound to the digests of the actions shown
        (``graph.approval.approval_answer``)."""
        snapshot = self._snapshot(thread_id)
        current = self.show(thread_id, snapshot)
        request = pending_request(thread_id, snapshot)
        if request is None:
            raise NoPendingApproval(
                f"thread {thread_id} is {current.status}, not awaiting approval"
            )
        reviewer = decision.reviewer or self.settings.reviewer
        answer = approval_answer(request, decision.model_copy(update={"reviewer": reviewer}))
        return self.invoke_segment(Command(resume=answer), thread_id, "resume")


def show_thread(settings: Settings, thread_id: str) -> Outcome:
    """``KeelApp.show`` without opening an app: what ``keel show`` runs.

    A status read needs the checkpoint, the graph compiled on it (LangGraph derives the thread's
    tasks and interrupts from it, and ``graph.status`` decides from those, not from ``next``),
    the lease and the record's last run; not the runtime context a run needs (the domain, its
    tools and manifest, the corpus, the ledger, the models), which ``KeelApp.open`` builds.

    Raises:
        ThreadNotFound: the thread has no checkpoint.
    """
    with open_thread_book(settings) as book, _thread_named(thread_id):
        snapshot = book.graph.get_state({"configurable": {"thread_id": thread_id}})
        if not snapshot.values:
            raise ThreadNotFound(f"no thread {thread_id}")
        found = book.standing(thread_id, snapshot)
    return outcome_of(thread_id, snapshot, found, _latest_run(settings, thread_id))


def _latest_run(settings: Settings, thread_id: str) -> str | None:
    """The thread's last recorded run, read without creating a record that is not there."""
    if not settings.record:
        return None
    try:
        records = open_record(settings)
    except RunNotFound:
        return None
    try:
        return records.latest_run(thread_id)
    finally:
        records.close()


def outcome_of(thread_id: str, snapshot: Any, found: ThreadStanding, run_id: str | None) -> Outcome:
    """The outcome a thread's latest state shows, with its status (``graph.status``) and the
    flight record's last run id."""
    values = snapshot.values
    pending = None
    request = pending_request(thread_id, snapshot)
    if request is not None:
        pending = [
            PendingAction(
                name=a["name"],
                args=a["args"],
                description=a.get("description", ""),
                digest=digest,
            )
            for a, digest in zip(request["action_requests"], request["digests"], strict=True)
        ]
    return Outcome(
        thread_id=thread_id,
        run_id=run_id,
        status=found.status,
        stalled_at=found.stalled_at,
        owner=found.owner,
        planner=values.get("planner", "none"),
        answer=values.get("answer", ""),
        pending=pending,
        evidence=values.get("evidence", []),
        filtered=values.get("filtered", []),
        conflicts=values.get("conflicts", []),
        plan=values.get("plan"),
        plan_verdict=values.get("plan_verdict"),
        results=values.get("results", []),
        escalation=values.get("escalation"),
        waiting=values.get("waiting"),
        budget_stop=values.get("budget_stop"),
    )


def pending_request(thread_id: str, snapshot: Any) -> ApprovalRequest | None:
    """The approval request the thread waits on, or None. Each interrupt is read as the type
    it is (``graph.wire``): an event wait is not an approval, and anything else is not Keel's.

    Raises:
        KeelError: the thread waits on an interrupt Keel did not raise.
    """
    found = None
    for intr in snapshot.interrupts:
        if event_wait_of(intr.value) is not None:
            continue
        found = approval_request_of(intr.value)
        if found is None:
            raise KeelError(f"thread {thread_id} waits on an interrupt Keel did not raise")
    return found


@contextmanager
def _thread_named(thread_id: str) -> Iterator[None]:
    """A database outage names the thread it interrupted, so its hint can be run as printed."""
    try:
        yield
    except StoreUnavailable as err:
        if err.thread_id is not None:
            raise
        raise err.for_thread(thread_id) from err.__cause__


def _checkpointed(recording: RunRecording, part: dict[str, Any]) -> None:
    """A checkpoint was saved: later events happened on it."""
    checkpoint_id = part["config"]["configurable"]["checkpoint_id"]
    recording.checkpoint_id = checkpoint_id
    metadata = part.get("metadata") or {}
    recording.emit(
        CheckpointSaved(
            checkpoint_id=checkpoint_id,
            step=metadata.get("step"),
            next=list(part.get("next") or ()),
            source=metadata.get("source"),
        )
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def probe_endpoint(base_url: str, timeout_s: float = 3.0) -> None:
    """A model endpoint that cannot even be connected to is a setting to fix, not a fault."""
    url = urlparse(base_url)
    if not url.hostname:
        raise ConfigError(f"KEEL_OPENAI_BASE_URL={base_url!r} is not a URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"the model endpoint {base_url} is unreachable ({err.strerror or err}): "
            "fix KEEL_OPENAI_BASE_URL or unset KEEL_PLANNER_MODEL to use the runbook planner"
        ) from err


__all__ = [
    "Decision",
    "KeelApp",
    "OpenedStores",
    "Outcome",
    "PendingAction",
    "RecoveryReport",
    "StoreWrapper",
    "ThreadRecovery",
    "outcome_of",
    "pending_request",
    "show_thread",
]
