"""One crash point of the crash sweep: a worker that dies at durable write N, then an operator.

``python -m evals.crash_worker point --home H --request refund --kill-at N`` (the sweep in
``evals.crash_sweep`` starts one such process per point) imports Keel once, then forks the
worker: a separate process that builds the app from the same settings the product uses, with
every durable store wrapped by a counter (``KeelApp.open(wrap_stores=...)``), and lives the whole
life of the request (run, approve, the bank's settlement and ``keel events``). At boundary N the
worker sends itself SIGKILL from inside, at the exact point: the kernel ends it as it would end a
worker killed from outside (no ``finally``, no ``atexit``, no flush; open transactions roll
back), and killing from inside is the only way to land on the boundary every time.

The parent then acts as the operator, with the ``keel`` commands themselves (``keel.cli.main``,
in this process: the commands open their stores anew each time, as a new process would):
``keel show`` after the kill and after every command, judged against the checkpoint read with
LangGraph directly; ``keel recover`` for a stalled thread, ``keel resume --approve`` for an
approval, ``keel domain settle`` and ``keel events`` for the bank; ``keel run`` again when the
worker died before the thread's first checkpoint. Last, the backend, the ledger and the thread's
status are compared with what the same request does without a crash. ``--kill-at 0`` is that run:
it counts the boundaries and prints the expected end.

A boundary is a call that writes (or, for the backend, acts): every public method of the
checkpointer, the intent ledger, the thread guard, the event inbox, the run leases and the flight
recorder's store that is not in its short list of reads, and every backend call (before it, and
after the backend acted, before its answer came back). A method added to a store later is counted
without anyone listing it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, ConfigDict, Field

from domains.support_desk.backend import DemoBackend
from graph.builder import build_graph
from graph.status import FINISHED
from graph.wire import event_wait_of
from keel.app import Decision, KeelApp, OpenedStores, StoreWrapper
from keel.settings import Settings
from stores.backends import open_checkpointer
from stores.ledger import Ledger
from tools.spec import ToolSpec

RequestName = Literal["refund", "bank_refund", "billing_email", "close_ticket"]
REQUESTS: dict[RequestName, str] = {
    "refund": "Customer C-1001 was charged twice for invoice INV-2001, "
    "please refund the duplicate charge",
    "bank_refund": "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge",
    "billing_email": "Please update the billing e-mail of C-1002 to finance@hopper.example",
    "close_ticket": "Close ticket T-77 and tell the customer",
}
"""The demo requests that act (``keel.demo.DEMO_REQUESTS``), by the names the sweep uses."""

SAVER_READS = frozenset(
    {"get", "get_tuple", "list", "aget", "aget_tuple", "alist", "get_next_version",
     "with_allowlist", "setup"}
)  # fmt: skip
LEDGER_READS = frozenset({"get", "for_thread", "owners"})
INBOX_READS = frozenset({"waiting_for", "cursor", "relaying"})
GUARD_READS = frozenset(
    {"spent", "rejected", "taint", "requester", "delivery", "facts", "close", "validated_plan",
     "review_entries"}
)  # fmt: skip
RECORD_READS = frozenset(
    {"events", "count", "latest_run", "next_segment", "latest_segment", "resolve", "run_ids",
     "runs", "close"}
)  # fmt: skip
LEASE_READS = frozenset({"get", "leases", "live", "close"})
"""What each store does that is not a write; every other public method is a boundary."""

ENDED = FINISHED
STALLED = "stalled"


class Tripwire:
    """Counts the boundaries of one worker's life and kills the worker at boundary ``kill_at``.

    Thread-safe: backend calls run on the tool pool's threads.
    """

    def __init__(self, kill_at: int | None = None, died_at: Path | None = None) -> None:
        self.kill_at = kill_at
        self.died_at = died_at
        self.kinds: list[str] = []
        self._lock = threading.Lock()

    def boundary(self, kind: str) -> None:
        with self._lock:
            self.kinds.append(kind)
            if len(self.kinds) != self.kill_at:
                return
            if self.died_at is not None:
                self.died_at.write_text(kind)
            os.kill(os.getpid(), signal.SIGKILL)


class _Counted:
    """A store whose public methods count as boundaries, except its named reads."""

    def __init__(self, inner: object, wire: Tripwire, kind: str, reads: frozenset[str]) -> None:
        self._inner = inner
        self._wire = wire
        self._kind = kind
        self._reads = reads

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or name in self._reads or not callable(attr):
            return attr
        wire, label = self._wire, f"{self._kind}.{name}"

        def counted(*args: Any, **kwargs: Any) -> Any:
            wire.boundary(label)
            return attr(*args, **kwargs)

        return counted


def counted_saver(inner: BaseCheckpointSaver[str], wire: Tripwire) -> BaseCheckpointSaver[str]:
    """The checkpointer with every write counted: each method of LangGraph's saver interface
    (``put``, ``put_writes``, ``delete_thread``, their async forms, and whatever the interface
    grows) that is not a read. LangGraph wants a ``BaseCheckpointSaver``, so this is a subclass
    whose methods are made from the interface's own list."""

    class CountedSaver(BaseCheckpointSaver[str]):
        def __init__(self) -> None:
            super().__init__(serde=inner.serde)

        @property
        def config_specs(self) -> Any:
            return inner.config_specs

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    for name in dir(BaseCheckpointSaver):
        if name.startswith("_") or isinstance(getattr(BaseCheckpointSaver, name, None), property):
            continue
        if not callable(getattr(BaseCheckpointSaver, name)):
            continue
        setattr(CountedSaver, name, _delegate(inner, name, wire, counted=name not in SAVER_READS))
    return CountedSaver()


def _delegate(inner: object, name: str, wire: Tripwire, *, counted: bool) -> Any:
    target = getattr(inner, name)
    label = f"checkpoint.{name}"

    def method(self: object, *args: Any, **kwargs: Any) -> Any:
        if counted:
            wire.boundary(label)
        return target(*args, **kwargs)

    return method


def counted_spec(spec: ToolSpec[Any, Any], wire: Tripwire) -> ToolSpec[Any, Any]:
    """A tool whose backend calls are boundaries: before the call, and after the backend acted
    but before its answer reaches the registry (the next boundaries, the recorder's tool event,
    the ledger's ``finish`` and the checkpoint's ``put_writes``, are "before the answer is
    recorded")."""
    func, lookup = spec.func, spec.lookup

    def call(request: Any) -> Any:
        wire.boundary(f"backend.call:{spec.name}")
        answer = func(request)
        wire.boundary(f"backend.acted:{spec.name}")
        return answer

    def looked_up(key: str) -> Any:
        assert lookup is not None
        wire.boundary(f"backend.lookup:{spec.name}")
        return lookup(key)

    return replace(spec, func=call, lookup=looked_up if lookup is not None else None)


def counting(wire: Tripwire) -> StoreWrapper:
    """``KeelApp.open(wrap_stores=...)``: every store of the app counted by ``wire``."""

    def wrap(stores: OpenedStores) -> OpenedStores:
        stores.tools.wrap_specs(lambda spec: counted_spec(spec, wire))
        return OpenedStores(
            checkpointer=counted_saver(stores.checkpointer, wire),
            ledger=cast(Ledger, _Counted(stores.ledger, wire, "ledger", LEDGER_READS))
            if stores.ledger is not None
            else None,
            inbox=cast(Any, _Counted(stores.inbox, wire, "inbox", INBOX_READS))
            if stores.inbox is not None
            else None,
            tools=stores.tools,
            records=cast(Any, _Counted(stores.records, wire, "record", RECORD_READS))
            if stores.records is not None
            else None,
            leases=cast(Any, _Counted(stores.leases, wire, "lease", LEASE_READS))
            if stores.leases is not None
            else None,
            guard=cast(Any, _Counted(stores.guard, wire, "guard", GUARD_READS))
            if stores.guard is not None
            else None,
        )

    return wrap


def live(settings: Settings, request: RequestName, thread_id: str, wire: Tripwire) -> None:
    """The whole life of a request, as the product's own commands live it: run, approve,
    the bank settles, the relay delivers. Each command opens the app anew, as a process would."""
    wrap = counting(wire)
    with KeelApp.open(settings, wrap_stores=wrap) as app:
        status = app.run(REQUESTS[request], thread_id=thread_id).status
    if status == "awaiting_approval":
        with KeelApp.open(settings, wrap_stores=wrap) as app:
            status = app.resume(thread_id, Decision(kind="approve", reviewer="operator")).status
    if status == "awaiting_event":
        DemoBackend(settings.domain_db).settle_pending_refunds()  # the bank: not Keel's write
        with KeelApp.open(settings, wrap_stores=wrap) as app:
            app.dispatch_events()


def true_status(settings: Settings, thread_id: str) -> str:
    """Where the thread stands, read from its checkpoint with LangGraph and nothing of Keel's:
    ``none`` (no checkpoint), a waiting status (an interrupt), ``stalled`` (tasks left to run,
    their writes saved or not) or, when the graph ended, the status it ended with."""
    with open_checkpointer(settings) as saver:
        snapshot = build_graph(saver).get_state({"configurable": {"thread_id": thread_id}})
    if not snapshot.values:
        return "none"
    interrupts = [i for task in snapshot.tasks for i in task.interrupts]
    if interrupts:
        events = any(event_wait_of(i.value) is not None for i in interrupts)
        return "awaiting_event" if events else "awaiting_approval"
    if snapshot.tasks:
        return "stalled"
    return str(snapshot.values.get("status", "running"))


def shown_is_true(shown: str, truth: str) -> bool:
    """``keel show`` tells the truth: never an end the graph did not reach."""
    if truth == "stalled":
        return shown == STALLED
    return shown == truth


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str]
    code: int
    error: str = ""
    shown: str
    truth: str


class PointResult(BaseModel):
    """One kill point, judged."""

    model_config = ConfigDict(extra="forbid")

    kill_at: int
    kind: str = Field(description="the boundary the worker died at ('' when counting)")
    died: bool
    commands: list[Command] = Field(default_factory=list)
    final_status: str = ""
    duplicated: list[str] = Field(default_factory=list, description="side effects beyond the run")
    missing: list[str] = Field(default_factory=list, description="side effects the run has")
    unsettled: list[str] = Field(default_factory=list, description="intents not done")
    stalled_after_recover: bool = False
    wrong_status: list[str] = Field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    boundaries: list[str] = Field(default_factory=list, description="counting run only")
    expected: Expected | None = None


class Expected(BaseModel):
    """What the request does without a crash: the end every kill point must reach."""

    model_config = ConfigDict(extra="forbid")

    status: str
    backend: list[str]
    intents: list[str]


PointResult.model_rebuild()


@contextlib.contextmanager
def _environment(home: Path, database: str | None) -> Iterator[None]:
    """The operator's shell: this home (and ``database``, a PostgreSQL URL, when there is
    one), the offline defaults, nothing else."""
    for name in list(os.environ):
        if name.startswith("KEEL_") or name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            del os.environ[name]
    os.environ.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false")
    if database is not None:
        # The worker and the operator (forked from this process) share it, as workers must.
        os.environ.update(KEEL_POSTGRES_URL=database, KEEL_APPROVAL_KEY=secrets.token_hex(32))
    os.chdir(home)  # no .env of the caller's working directory
    yield


def _keel(*argv: str) -> tuple[int, dict[str, Any] | None, str]:
    """One ``keel`` command, run by the CLI's own entry point; its exit code, JSON and error."""
    from keel.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--json"])
    text = out.getvalue().strip()
    data = json.loads(text.splitlines()[-1]) if code == 0 and text else None
    return code, data, err.getvalue().strip()


def _show(thread_id: str) -> str:
    code, data, error = _keel("show", thread_id)
    if code == 0 and data is not None:
        return str(data["status"])
    if "no thread" in error:
        return "none"
    return f"error: {error}"


def operate(settings: Settings, request: RequestName, thread_id: str, result: PointResult) -> None:
    """Finish the thread as an operator would, checking ``keel show`` after every step."""

    def look(argv: list[str], code: int, error: str) -> str:
        shown, truth = _show(thread_id), true_status(settings, thread_id)
        result.commands.append(
            Command(argv=argv, code=code, error=error[:300], shown=shown, truth=truth)
        )
        if not shown_is_true(shown, truth):
            result.wrong_status.append(f"after {' '.join(argv) or 'the kill'}: shown {shown}, "
                                       f"the checkpoint says {truth}")  # fmt: skip
        return shown

    shown = look([], 0, "")
    for _ in range(8):
        if shown in ENDED:
            break
        if shown == "none":
            argv = ["run", REQUESTS[request], "--thread", thread_id, "--no-input"]
        elif shown == STALLED:
            argv = ["recover", "--all"]
        elif shown == "awaiting_approval":
            argv = ["resume", thread_id, "--approve"]
        elif shown == "awaiting_event":
            code, _, error = _keel("domain", "settle")
            argv = ["events"]
        else:
            break
        code, _, error = _keel(*argv)
        shown = look(argv, code, error)
        if argv[0] == "recover" and shown == STALLED:
            result.stalled_after_recover = True
            break
    result.final_status = shown
    if shown not in ENDED:
        result.stalled_after_recover = True


def judge(settings: Settings, thread_id: str, expected: Expected, result: PointResult) -> None:
    backend = sorted(DemoBackend(settings.domain_db).snapshot())
    result.duplicated = sorted(set(backend) - set(expected.backend))
    result.missing = sorted(set(expected.backend) - set(backend))
    intents = _intents(settings, thread_id)
    result.unsettled = [i for i in intents if not i.endswith(":done")]
    if intents != expected.intents:
        result.unsettled += [f"intents {intents}, expected {expected.intents}"]
    if result.final_status != expected.status:
        result.wrong_status.append(f"ended {result.final_status}, expected {expected.status}")


def _intents(settings: Settings, thread_id: str) -> list[str]:
    from graph.context import KeelContext

    ledger = KeelContext.from_settings(settings).ledger
    assert ledger is not None
    return [f"{i['step']}:{i['tool']}:{i['status']}" for i in ledger.for_thread(thread_id)]


def run_point(
    home: Path,
    request: RequestName,
    kill_at: int,
    *,
    postgres_url: str | None = None,
    expected: Expected | None = None,
) -> PointResult:
    """Fork the worker, let it die at boundary ``kill_at`` (0: live to the end and count), then
    operate and judge. The worker is forked before anything is opened, so it shares no store."""
    started = time.perf_counter()
    thread_id = f"crash-{request}"
    died_at = home / "died-at.txt"
    counted = home / "boundaries.json"
    with _environment(home, postgres_url):
        settings = Settings()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                wire = Tripwire(kill_at or None, died_at)
                live(settings, request, thread_id, wire)
                counted.write_text(json.dumps(wire.kinds))
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        died = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        result = PointResult(
            kill_at=kill_at, kind=died_at.read_text() if died_at.exists() else "", died=died
        )
        if kill_at == 0:
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                result.error = "the run without a crash failed"
                return result
            result.boundaries = json.loads(counted.read_text())
            result.final_status = _show(thread_id)
            result.expected = Expected(
                status=result.final_status,
                backend=sorted(DemoBackend(settings.domain_db).snapshot()),
                intents=_intents(settings, thread_id),
            )
        else:
            assert expected is not None
            if not died:
                result.error = f"the worker did not die at boundary {kill_at} (status {status})"
            try:
                operate(settings, request, thread_id, result)
                judge(settings, thread_id, expected, result)
            except Exception as err:
                result.error = f"{type(err).__name__}: {err}"[:500]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def warm() -> None:
    """Load what every point needs once, before any fork: the imports and the embedding model.

    The local model runs on one onnxruntime thread (``retrieval.embeddings``), so no thread pool
    exists when the process forks (a forked child cannot use its parent's threads)."""
    from retrieval.embeddings import embedder_for

    embedder_for(Settings(_env_file=None)).embed(["warm up"])  # type: ignore[call-arg]
    # What the commands import on first use (langchain-openai alone takes seconds).
    import agents.models  # noqa: F401
    import domains.support_desk  # noqa: F401
    import keel.cli  # noqa: F401
    import observability.replay  # noqa: F401


def serve() -> None:
    """Run points read from stdin, one JSON object a line, each in a child forked from this warm
    process; print each result as one JSON line. The child forks the worker in turn."""
    warm()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        out = Path(job["home"]) / "result.json"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                expected = Expected.model_validate(job["expected"]) if job.get("expected") else None
                result = run_point(
                    Path(job["home"]), job["request"], job["kill_at"],
                    postgres_url=job.get("postgres_url"), expected=expected,
                )  # fmt: skip
                out.write_text(result.model_dump_json())
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if out.exists():
            print(out.read_text(), flush=True)
        else:
            error = f"the point's process ended with status {status}"
            failed = PointResult(kill_at=job["kill_at"], kind="", died=False, error=error)
            print(failed.model_dump_json(), flush=True)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.crash_worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    point = sub.add_parser("point", help="kill a worker at one boundary, recover, judge")
    point.add_argument("--home", type=Path, required=True, help="a seeded, indexed Keel home")
    point.add_argument("--request", choices=sorted(REQUESTS), required=True)
    point.add_argument("--kill-at", type=int, default=0, help="0: count the boundaries")
    point.add_argument("--postgres-url", help="checkpoints and ledger in this database")
    point.add_argument("--expect", type=Path, help="the counting run's JSON (its 'expected')")
    sub.add_parser("serve", help="run the points given on stdin (the sweep's worker pool)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
        return 0
    expected = None
    if args.expect is not None:
        expected = Expected.model_validate(json.loads(args.expect.read_text())["expected"])
    result = run_point(
        args.home.resolve(), args.request, args.kill_at,
        postgres_url=args.postgres_url, expected=expected,
    )  # fmt: skip
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
