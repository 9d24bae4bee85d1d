"""Runs a server executes, recorded: what ``langgraph dev`` and an engine worker (Aegra) run is
written to the same flight record as ``keel run``, so ``keel runs``, ``trace``, ``explain`` and
``replay`` know it.

A server calls the graph itself, with its own checkpointer and config; nothing of ``KeelApp``
runs. So the served graph carries one callback handler in its own config (both servers keep a
graph's config when they copy it to give it their checkpointer), :class:`ServedRuns`:

- at a run's root it opens a segment of a Keel run (``RunStarted``; for an answer,
  ``ApprovalAnswered``) and gives the run a ``RecordingCallback`` of its own, to which it routes
  every node's and model's callback of that run (the record's nodes, plans, verdicts, model
  calls, escalations);
- an interrupt raised by a node is recorded as the approval request (or event wait) it carries;
- at the root's end it records ``RunEnded`` with the status and answer the run's output holds
  (a cancel or an error ends the segment with the error);
- the process's context (``graph.context.process_context``) gets the recorder's taps once, in
  place: its tool calls, meter, corpus searches and clock readings go to the run of the thread
  whose node is running (LangGraph's config of the running node names it).

Keel run ids: a new request starts a run whose id is the server's run id (``keel trace RUN_ID``
with the id the client saw); an answer, an event or a re-run continues the thread's latest run
as a new segment, as ``keel resume`` does; a run the engine starts again after its worker died
(same server run id) is a ``recover`` segment of it.

Cost: events are queued and written by a background thread in batches
(``stores.flight_record.BatchedRecord``); the run's end waits for them to be written, so a client
that reads the record after the run sees all of it, and so does the end of a node that made a
write or an irreversible call, before LangGraph saves the node's writes (a re-run after a dead
worker applies those without running the node again). A worker killed mid-run loses only what
was queued in its last moments, never the calls of a node whose outcome the thread keeps.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config
from langgraph.errors import GraphInterrupt
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from graph.builder import build_graph, graph_version
from graph.context import KeelContext, process_context
from graph.wire import approval_request_of, event_wait_of
from observability.otel import otel_from_environment
from observability.record_events import (
    AnyPayload,
    ApprovalAnswered,
    ApprovalRequested,
    EventAwaited,
    RunEnded,
    RunStarted,
    ToolCallMade,
)
from observability.recorder import (
    Recorder,
    RecordingCallback,
    RecordingClock,
    RecordingCorpus,
    RecordSink,
    RunRecording,
    model_name,
)
from observability.redaction import Redactor
from stores.backends import open_stores
from stores.checkpoints import keel_checkpointer
from stores.flight_record import BatchedRecord, NoRecord

Mode = Literal["run", "resume", "recover", "fork", "event"]

log = logging.getLogger("keel.record.served")
if log.level == logging.NOTSET:
    # A served run's events go to the record; one log line per event (about 60 a run) in the
    # server's log is noise and CPU. Warnings (a record store that fails) still show.
    log.setLevel(logging.WARNING)


TITLE_CHARS = 80
"""A thread's title is its request cut to about this many characters, at a word."""


@dataclass(frozen=True)
class ThreadLabel:
    """What a client's thread list shows of a thread, kept in the thread's metadata by the
    server (``keel_title``, ``keel_status``, ``keel_domain``)."""

    thread_id: str
    title: str | None
    status: str
    domain: str

    def metadata(self) -> dict[str, str]:
        """The metadata keys this label sets (no title: the thread keeps the one it has).

        Example:
            >>> ThreadLabel("t", "Ship ORD-7", "done", "order_desk").metadata()
            {'keel_status': 'done', 'keel_domain': 'order_desk', 'keel_title': 'Ship ORD-7'}
        """
        out = {"keel_status": self.status, "keel_domain": self.domain}
        if self.title:
            out["keel_title"] = self.title
        return out


ThreadLabeller = Callable[[ThreadLabel], None]
"""Writes a thread's label where the server keeps the thread's metadata (``graph.studio``'s
engine entry gives one for Aegra's table)."""


def title_of(request: str) -> str:
    """A thread's title: the request on one line, cut at a word to about 80 characters.

    Example:
        >>> title_of("Order ORD-7 left the warehouse yesterday but the carrier lost it, please "
        ...          "ship a replacement")
        'Order ORD-7 left the warehouse yesterday but the carrier lost it, please ship a…'
    """
    text = " ".join(request.split())
    if len(text) <= TITLE_CHARS:
        return text
    return text[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


@dataclass
class _Run:
    """One served run being recorded: its recorder, segment and node callback."""

    recorder: Recorder
    recording: RunRecording
    callback: RecordingCallback
    thread_id: str
    started: float
    request: str | None = None
    children: set[UUID] = field(default_factory=set)
    effects: bool = False
    """A write or irreversible call was recorded since the record was last flushed for it."""


class _Router(Recorder):
    """The recorder the process's context is tapped with: each event goes to the run of the
    thread whose node is running now (none outside a served run: a health probe, a start-up)."""

    def __init__(self, runs: ServedRuns, record: BatchedRecord, redactor: Redactor) -> None:
        super().__init__(record, redactor, log=log)
        self.runs = runs

    def emit(
        self, payload: AnyPayload, *, node: str | None = None, step: int | None = None
    ) -> None:
        run = self.runs.current()
        if run is not None:
            run.recorder.emit(payload, node=node, step=step)
            if isinstance(payload, ToolCallMade) and payload.call.effect != "read":
                run.effects = True


@dataclass
class _Process:
    """What this process records with: its context (tapped), the record, the router."""

    context: KeelContext
    record: BatchedRecord
    router: _Router
    sinks: list[RecordSink] = field(default_factory=list)
    """Told every event of every run (OpenTelemetry's spans, when an endpoint is set)."""


class ServedRuns(BaseCallbackHandler):
    """The callback handler of the served graph: records every run of it in this process.

    One handler serves the process's concurrent runs; each run's events are keyed by its root
    run id (LangChain's, for callbacks) and by its thread (for the context's taps).
    """

    raise_error = False  # a fault in the record is logged by LangChain; the run goes on

    def __init__(self, context: Callable[[], KeelContext] = process_context) -> None:
        self._context = context
        self._lock = threading.RLock()
        self._process: _Process | None = None
        self._runs: dict[UUID, _Run] = {}
        self._owner: dict[UUID, UUID] = {}
        self._threads: dict[str, _Run] = {}
        self.labeller: ThreadLabeller | None = None
        """Where each run's end labels its thread (None: the server keeps no label)."""

    def process(self) -> _Process | None:
        """This process's context, tapped, and its record (None with ``KEEL_RECORD`` off and no
        OpenTelemetry endpoint; with an endpoint only, a record that keeps nothing).

        Built once per process context (a test that builds a new one gets a new record)."""
        context = self._context()
        with self._lock:
            known = self._process
            if known is not None and known.context is context:
                return known
            otel = otel_from_environment()
            if not context.settings.record and otel is None:
                return None
            store = (
                open_stores(context.settings).flight_record
                if context.settings.record
                else NoRecord()
            )
            record = BatchedRecord(store, log=log)
            atexit.register(record.close)
            router = _Router(self, record, Redactor.from_settings(context.settings))
            _tap(context, router)
            if known is not None:
                known.record.close()
            self._process = _Process(context, record, router, [otel.on_event] if otel else [])
            return self._process

    def current(self) -> _Run | None:
        """The run of the thread whose node is running in this thread of control."""
        try:
            configurable = get_config().get("configurable") or {}
        except RuntimeError:  # not inside a graph run
            return None
        thread_id = configurable.get("thread_id")
        with self._lock:
            return self._threads.get(str(thread_id)) if thread_id is not None else None

    # -- the run's root -------------------------------------------------------------------

    def _open(self, run_id: UUID, inputs: Any, metadata: dict[str, Any]) -> _Run | None:
        served = self.process()
        thread_id = metadata.get("thread_id")
        if served is None or thread_id is None:
            return None
        thread_id = str(thread_id)
        server_run = str(metadata.get("run_id") or "") or None
        mode, request, answer = _segment_of(inputs, metadata)
        record = served.record
        segment: int | None = None  # a new run's: its record says (the engine may re-run it)
        if mode in ("run", "fork"):
            keel_run = server_run or str(uuid.uuid4())
        elif (latest := record.latest_segment(thread_id)) is not None:
            keel_run, segment = latest[0], latest[1] + 1  # one read, the thread's events only
        else:  # a thread with no record yet has no run to continue
            keel_run, segment = server_run or str(uuid.uuid4()), 0
        recorder = Recorder(
            record, Redactor.from_settings(served.context.settings), log=log, sinks=served.sinks
        )
        recording = recorder.start(
            run_id=keel_run, thread_id=thread_id, trace_id=str(run_id), segment=segment
        )
        if mode == "run" and recording.segment > 0:
            mode = "recover"  # the engine runs it again: its worker died mid-run
        ctx = served.context
        gate = ctx.tools.gate
        recording.emit(
            RunStarted(
                mode=mode,
                request=request,
                from_checkpoint=metadata.get("checkpoint_id") if mode == "fork" else None,
                resume_value=answer if mode == "event" else None,
                trace_id=str(run_id),
                planner_model=model_name(ctx.planner_model) if ctx.planner_model else None,
                fallback_model=model_name(ctx.fallback_model) if ctx.fallback_model else None,
                manifest_version=gate.version if gate is not None else None,
                graph_version=graph_version(),
            )
        )
        if mode == "resume" and answer is not None:
            recording.emit(ApprovalAnswered(answer=answer))
        run = _Run(
            recorder, recording, recorder.callback(), thread_id, time.perf_counter(), request
        )
        with self._lock:
            self._runs[run_id] = run
            self._threads[thread_id] = run
        return run

    def _close(self, run_id: UUID, outputs: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            if run is None:
                return
            for child in run.children:
                self._owner.pop(child, None)
            if self._threads.get(run.thread_id) is run:
                del self._threads[run.thread_id]
        duration = round((time.perf_counter() - run.started) * 1000, 3)
        if error is None:
            values = outputs if isinstance(outputs, dict) else {}
            ended = RunEnded(
                status=str(values.get("status") or "unknown"),
                answer=str(values.get("answer") or ""),
                duration_ms=duration,
            )
        else:
            what = "cancelled" if _cancelled(error) else "error"
            ended = RunEnded(
                status=what, duration_ms=duration, error=f"{type(error).__name__}: {error}"[:500]
            )
        run.recording.emit(ended)
        run.recorder.stop()
        self._label(run, ended.status)
        store = run.recorder.flight_record
        if isinstance(store, BatchedRecord):  # this run's events, not every run's of the process
            store.flush(run_id=run.recording.run_id)

    def _label(self, run: _Run, status: str) -> None:
        labeller, served = self.labeller, self._process
        if labeller is None or served is None:
            return
        title = title_of(run.request) if run.request else None
        label = ThreadLabel(run.thread_id, title, status, served.context.domain.name)
        try:
            labeller(label)
        except Exception as err:  # a label is for a list on screen: never the run's failure
            log.warning(
                "thread_label_failed",
                extra={"keel": {"thread_id": run.thread_id, "error": str(err)[:300]}},
            )

    def _run_of(self, run_id: UUID, parent_run_id: UUID | None, *, adopt: bool) -> _Run | None:
        """The served run a callback belongs to (``adopt``: a start, remembered as its child)."""
        with self._lock:
            if run_id in self._runs:
                return self._runs[run_id]
            root = self._owner.get(run_id)
            if root is None and adopt and parent_run_id is not None:
                known = parent_run_id in self._runs
                root = parent_run_id if known else self._owner.get(parent_run_id)
                if root is not None:
                    self._owner[run_id] = root
                    self._runs[root].children.add(run_id)
            return self._runs.get(root) if root is not None else None

    def _forget(self, run_id: UUID) -> None:
        with self._lock:
            root = self._owner.pop(run_id, None)
            if root is not None and root in self._runs:
                self._runs[root].children.discard(run_id)

    # -- LangChain's callbacks --------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is None:
            run = self._open(run_id, inputs, dict(metadata or {}))
        else:
            run = self._run_of(run_id, parent_run_id, adopt=True)
        if run is not None:
            run.callback.on_chain_start(
                serialized, inputs, run_id=run_id, parent_run_id=parent_run_id,
                metadata=metadata, **kwargs,
            )  # fmt: skip

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._run_of(run_id, None, adopt=False)
        if run is None:
            return
        node = run.callback.is_node(run_id)
        run.callback.on_chain_end(outputs, run_id=run_id, **kwargs)
        if run_id in self._runs:
            self._close(run_id, outputs=outputs)
            return
        self._forget(run_id)
        if node:
            self._settle_effects(run)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._run_of(run_id, None, adopt=False)
        if run is None:
            return
        if run_id in self._runs:
            if isinstance(error, GraphInterrupt):  # langgraph ends an interrupted root so
                self._close(run_id, outputs={"status": "interrupted"})
            else:
                self._close(run_id, error=error)
            return
        node = run.callback.is_node(run_id)
        run.callback.on_chain_error(error, run_id=run_id, **kwargs)
        self._forget(run_id)
        if isinstance(error, GraphInterrupt):
            _requested(run.recording, error)
        if node:
            self._settle_effects(run)

    def _settle_effects(self, run: _Run) -> None:
        """A node that made a write or an irreversible call ends with its events written.

        LangGraph saves a node's writes after its end callback returns, and a run the engine
        starts again after its worker died applies saved writes without running the node: so
        the node's tool calls, outcomes and verdicts must be in the record before then, or a
        worker killed in between leaves the effects in the world and none of them in the record.
        A node that only read waits for nothing (its events go with the next batch).
        """
        store = run.recorder.flight_record
        if run.effects and isinstance(store, BatchedRecord):
            run.effects = False
            if not store.flush(run_id=run.recording.run_id):  # the store hangs: say so, go on
                log.warning(
                    "record_flush_timed_out",
                    extra={"keel": {"run_id": run.recording.run_id, "thread_id": run.thread_id}},
                )

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self._run_of(run_id, parent_run_id, adopt=True)
        if run is not None:
            run.callback.on_chat_model_start(
                serialized, messages, run_id=run_id, metadata=metadata, **kwargs
            )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._run_of(run_id, None, adopt=False)
        if run is not None:
            run.callback.on_llm_end(response, run_id=run_id, **kwargs)
            self._forget(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._run_of(run_id, None, adopt=False)
        if run is not None:
            run.callback.on_llm_error(error, run_id=run_id, **kwargs)
            self._forget(run_id)


def _tap(context: KeelContext, router: _Router) -> None:
    """Give the process's context the recorder's taps, in place: the nodes of every served run
    use this one object (``graph.context.context_of``)."""
    tapped = router.instrument(context)
    if not isinstance(context.corpus, RecordingCorpus):
        context.corpus = tapped.corpus
    if not isinstance(context.clock, RecordingClock):
        context.clock = tapped.clock


def _segment_of(
    inputs: Any, metadata: dict[str, Any]
) -> tuple[Mode, str | None, dict[str, Any] | None]:
    """What a run's input makes of it: its mode, the request, the answer it carries."""
    if isinstance(inputs, Command):
        resume = inputs.resume
        if isinstance(resume, list):
            resume = {"decisions": resume}
        answer = resume if isinstance(resume, dict) else None
        if answer is not None and "event" in answer:
            return "event", None, answer
        return "resume", None, answer
    if inputs is None:
        return ("fork" if metadata.get("checkpoint_id") else "recover"), None, None
    return "run", _request_of(inputs), None


def _request_of(inputs: Any) -> str | None:
    """The request of a run's input: ``request``, else the last human message's text."""
    if not isinstance(inputs, dict):
        return None
    request = inputs.get("request")
    if isinstance(request, str) and request.strip():
        return request
    for message in reversed(inputs.get("messages") or []):
        kind: Any
        content: Any
        if isinstance(message, BaseMessage):
            kind, content = message.type, message.content
        elif isinstance(message, dict):
            kind = message.get("type") or message.get("role")
            content = message.get("content")
        else:
            continue
        if kind in ("human", "user"):
            if isinstance(content, list):
                content = " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, dict)
                ).strip()
            return str(content) if content else None
    return None


def _requested(recording: RunRecording, interrupt: GraphInterrupt) -> None:
    """The approval request (or event wait) an interrupted node raised, as ``KeelApp`` records
    it after its segment."""
    for item in interrupt.args[0] if interrupt.args else ():
        value, interrupt_id = getattr(item, "value", None), str(getattr(item, "id", ""))
        if (wait := event_wait_of(value)) is not None:
            recording.emit(EventAwaited(interrupt_id=interrupt_id, waiting=wait))
        elif (asked := approval_request_of(value)) is not None:
            recording.emit(ApprovalRequested(interrupt_id=interrupt_id, request=asked))


def _cancelled(error: BaseException) -> bool:
    return isinstance(error, asyncio.CancelledError | KeyboardInterrupt)


RUNS = ServedRuns()
"""This process's recorder of served runs (the served graph's callback)."""


class ServedGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """Keel's compiled graph, reading the server's checkpoints with Keel's allow-list.

    A server gives the graph its checkpointer by copying the graph (``copy`` keeps this class,
    not the allow-list LangGraph derives at compile time under ``LANGGRAPH_STRICT_MSGPACK``,
    which the copy drops: Keel's types would then load as dicts). LangGraph asks the graph for
    the saver every run and state read uses (``_apply_checkpointer_allowlist``, where a strict
    graph adds its allow-list); this graph answers with ``stores.checkpoints.keel_checkpointer``,
    strict or not strict in the environment.
    """

    def _apply_checkpointer_allowlist(
        self, checkpointer: BaseCheckpointSaver[Any] | None
    ) -> BaseCheckpointSaver[Any] | None:
        return keel_checkpointer(checkpointer) if checkpointer is not None else None


def served_graph(runs: ServedRuns = RUNS) -> ServedGraph:
    """Keel's graph as a server runs it: no checkpointer (the server brings its own, read with
    Keel's allow-list), no context schema (the nodes use the process's context), every run
    recorded by ``runs``."""
    compiled = build_graph(with_context_schema=False).with_config(callbacks=[runs])
    # What ``Pregel.copy`` does, into this class.
    return ServedGraph(**{k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"})


def served_context(runs: ServedRuns = RUNS) -> KeelContext:
    """This process's context, built and prepared (``graph.context.process_context``) and
    tapped by the recorder of served runs."""
    context = process_context()
    runs.process()
    return context
