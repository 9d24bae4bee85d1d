"""The runtime context: every dependency a node uses, passed in by LangGraph, never a global.

Callers pass ``context=KeelContext.from_settings(...)`` to ``invoke``. Under ``langgraph dev``
no context is passed; nodes then build the default one from the environment (cached per process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

from langgraph.runtime import Runtime

from agents.models import Meter, chat_model_for, meter_for
from graph.domain import Domain, gated_registry, load_domain
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from stores.backends import Stores, open_stores
from stores.guard import Guard
from stores.inbox import Inbox
from stores.ledger import Ledger
from stores.review_log import ReviewLog
from tools.spec import ToolRegistry

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class KeelContext:
    """What the nodes of one graph run may use.

    Attributes:
        settings: the validated settings.
        domain: the example domain (tools, entities, runbooks, rules).
        tools: the domain's tool registry, bound to its backends.
        corpus: the corpus index the retriever queries.
        ledger: the intent ledger of irreversible calls.
        inbox: the event inbox (who waits for which domain event).
        guard: the thread guard (``stores.guard``): receipts consumed, rejections, taint, the
            requester and event deliveries, outside the checkpoint (a replay builds a throwaway
            one). None only for a context built by hand with no stores (a benchmark, a unit
            test), and then the checks read the state's working copy alone.
        planner_model: the chat model for the planner, or None for the runbook planner.
        fallback_model: a second chat model tried when the first fails.
        meter: the door every model call goes through (usage, prices, budgets); None: an
            unmetered one with no budget (a context built by hand).
        clock: the time source (replay and tests control it).
        reviews: the threads' approval history (``stores.review_log``), outside the checkpoint.
    """

    settings: Settings
    domain: Domain
    tools: ToolRegistry
    corpus: CorpusStore
    ledger: Ledger | None = None
    inbox: Inbox | None = None
    guard: Guard | None = None
    planner_model: BaseChatModel | None = None
    fallback_model: BaseChatModel | None = None
    clock: Callable[[], datetime] = field(default=_utc_now)
    reviews: ReviewLog | None = None
    meter: Meter | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        domain: Domain | None = None,
        planner_model: BaseChatModel | None = None,
        fallback_model: BaseChatModel | None = None,
        stores: Stores | None = None,
    ) -> KeelContext:
        """Build the context the settings describe, on ``stores`` (default: the ones the
        settings select, ``stores.backends.open_stores``).

        Example:
            >>> from pathlib import Path
            >>> ctx = KeelContext.from_settings(Settings(home=Path("/tmp/keel-doc")))
            >>> ctx.domain.name
            'support_desk'
        """
        settings = settings or Settings()
        stores = stores or open_stores(settings)
        domain = domain or load_domain(settings.domain)
        if planner_model is None and settings.model_configured:
            planner_model = chat_model_for(settings, settings.planner_model)
            if settings.planner_fallback_model:
                fallback_model = chat_model_for(settings, settings.planner_fallback_model)
        # Deny by default: no manifest, no context (and so no graph run).
        tools = gated_registry(domain, settings, stores)
        return cls(
            settings=settings,
            domain=domain,
            tools=tools,
            corpus=CorpusStore(settings, embedder_for(settings)),
            ledger=stores.ledger,
            inbox=stores.inbox,
            guard=stores.guard,
            planner_model=planner_model,
            fallback_model=fallback_model,
            reviews=stores.reviews,
            meter=meter_for(settings, stores.budgets),
        )

    def prepare(self) -> None:
        """Make the set-up ready to serve runs, as ``KeelApp`` does before its first: the
        domain's backend prepared when it is not (an empty or half-written one is repaired;
        one that is not the domain's raises ``ConfigError``), the corpus index required
        (``CorpusMissing`` names ``keel ingest``)."""
        if not self.domain.is_prepared(self.settings):
            self.domain.prepare(self.settings)
        self.corpus.require()


def serving_context(settings: Settings | None = None) -> KeelContext:
    """The context of a server process (``langgraph dev``, an engine worker): built from the
    settings and prepared (``KeelContext.prepare``), so a fresh clone's first request plans
    instead of failing on a backend nobody seeded."""
    context = KeelContext.from_settings(settings)
    context.prepare()
    return context


class _ProcessContext:
    """The one context a server process builds from its settings, on first use, under a lock.

    A serving engine (Aegra, ``langgraph dev``) passes no Keel context and runs several runs at
    once on threads of one process: without the lock, the first runs would each build a context
    (a ledger pool, a corpus client, an inbox) and all but one would leak. Each worker process
    builds its own, once; nothing is shared between processes but the stores they point at.
    """

    def __init__(self, build: Callable[[], KeelContext]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._context: KeelContext | None = None
        self.builds = 0

    def get(self) -> KeelContext:
        with self._lock:
            if self._context is None:
                self._context = self._build()
                self.builds += 1
            return self._context


@cache
def _process_context() -> _ProcessContext:
    return _ProcessContext(serving_context)


def process_context() -> KeelContext:
    """This process's context, built from the environment's settings and prepared
    (``serving_context``) on first use."""
    return _process_context().get()


def _default_context() -> KeelContext:
    return process_context()


def attempt_of(runtime: Runtime[KeelContext]) -> str:
    """This node's attempt: LangGraph's task id, the same when the task is run again after a
    crash (from the same checkpoint), new for any write of the state or fork that made a new
    checkpoint. The thread guard lets an attempt finish what it started, and nothing else."""
    info = runtime.execution_info
    if info is None or not info.task_id:
        raise RuntimeError("Keel's graph runs its nodes with LangGraph's execution info")
    return f"{info.checkpoint_id}:{info.task_id}"


def thread_of(runtime: Runtime[KeelContext]) -> str:
    """The thread this run belongs to: the business id approvals and idempotency keys use."""
    info = runtime.execution_info
    if info is None or not info.thread_id:
        raise RuntimeError("Keel's graph needs a thread_id in config['configurable']")
    return info.thread_id


def guarded_thread(runtime: Runtime[KeelContext]) -> tuple[Guard, str] | None:
    """The thread guard and this run's thread, or None: no guard (a context built by hand with
    no stores), or a node called outside a graph run (a benchmark, a unit test), which has no
    thread to guard."""
    ctx = context_of(runtime)
    info = runtime.execution_info
    if ctx.guard is None or info is None or not info.thread_id:
        return None
    return ctx.guard, info.thread_id


def context_of(runtime: Runtime[KeelContext]) -> KeelContext:
    """The run's context, or the default one when the caller passed none (``langgraph dev``)."""
    return runtime.context if runtime.context is not None else _default_context()
