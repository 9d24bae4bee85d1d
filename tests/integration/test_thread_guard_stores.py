"""The thread guard keeps one contract on both backends: SQLite beside the intent ledger, and
PostgreSQL beside the checkpoints (a throwaway cluster, ``conftest.py``); and a refund thread's
guarantees hold with the guard in Postgres. The approval history (``stores.review_log``) is kept
in the same store, so workers on two machines share it."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from graph.state import DomainEvent, EventWait, Evidence, Plan, Step
from keel.app import Decision, KeelApp
from keel.errors import StoreUnavailable
from keel.settings import Settings
from stores.backends import open_stores
from stores.guard import Guard, SqliteGuard, plan_digest
from stores.guard_postgres import PostgresGuard
from stores.ledger import Intent
from stores.review_log import ReviewEntry
from tests.builders import evidence
from tests.conftest import REFUND_REQUEST

pytestmark = pytest.mark.integration


def _settings(home: Path, url: str | None) -> Settings:
    return Settings(home=home, postgres_url=url, _env_file=None)  # type: ignore[call-arg, arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def guard(request: pytest.FixtureRequest, tmp_path: Path) -> Guard:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    made = open_stores(_settings(tmp_path, url)).guard
    assert isinstance(made, PostgresGuard if url else SqliteGuard)
    return made


def _event(seq: int, key: str = "RF-1") -> DomainEvent:
    return DomainEvent(
        seq=seq, type="refund.settled", key=key, payload={"amount": 49.0}, created_at="now"
    )


def test_a_receipt_is_consumed_once_and_its_attempt_may_finish(guard: Guard) -> None:
    assert guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    # Another attempt (a fork, a caller's goto): refused. The same attempt re-run after a
    # crash, before its call answered: it may make its call.
    assert not guard.consume_receipt("t-1", "sha256:a", attempt="task-2", approved_by="ann")
    assert guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    assert guard.spent("t-1") == {"sha256:a"}
    assert guard.spent("t-1", attempt="task-1") == frozenset()  # its own open consumption
    assert guard.spent("t-1", attempt="task-2") == {"sha256:a"}
    guard.settle_receipt("t-1", "sha256:a")
    # Settled: not even the attempt that consumed it may use it again.
    assert not guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    assert guard.spent("t-1", attempt="task-1") == {"sha256:a"}
    # Per thread and per action.
    assert guard.consume_receipt("t-2", "sha256:a", attempt="task-3", approved_by="ann")
    assert guard.consume_receipt("t-1", "sha256:b", attempt="task-4", approved_by="ann")


def test_two_attempts_racing_for_one_receipt_get_one_yes(guard: Guard) -> None:
    answers: list[bool] = []
    start = threading.Barrier(8)

    def race(n: int) -> None:
        start.wait()
        answers.append(
            guard.consume_receipt("t-race", "sha256:a", attempt=f"task-{n}", approved_by="ann")
        )

    workers = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(answers) == [False] * 7 + [True]


def test_rejections_hold_and_keep_who_rejected_first(guard: Guard) -> None:
    assert guard.rejected("t-1") == frozenset()
    guard.record_rejection("t-1", "sha256:a", by="ann")
    guard.record_rejection("t-1", "sha256:a", by="bob")  # a second answer: still one rejection
    assert guard.rejected("t-1") == {"sha256:a"}
    assert guard.rejected("t-2") == frozenset()


def test_taint_is_the_low_trust_evidence_that_ever_entered(guard: Guard) -> None:
    official = evidence(chunk_id="policy:1", trust_tier="official")
    wiki = evidence(chunk_id="wiki:1", trust_tier="wiki", text="The wiki says so.")
    outside = evidence(chunk_id="tool:get_ticket:T-77:body", trust_tier="untrusted")
    assert guard.record_taint("t-1", [official]) == []  # nothing low-trust: nothing written
    assert guard.record_taint("t-1", [official, wiki]) == [wiki]
    guard.record_taint("t-1", [outside, wiki])  # wiki again: kept once, where it first entered
    taint = guard.taint("t-1")
    assert [e.chunk_id for e in taint] == ["wiki:1", "tool:get_ticket:T-77:body"]
    assert taint[0] == wiki and isinstance(taint[0], Evidence)  # the whole evidence, as shown
    assert guard.taint("t-2") == []


def test_the_first_requester_is_the_requester(guard: Guard) -> None:
    assert guard.requester("t-1") is None
    assert guard.record_requester("t-1", "ann") == "ann"
    assert guard.record_requester("t-1", "mallory") == "ann"
    assert guard.requester("t-1") == "ann"


def test_an_event_wakes_its_thread_once_and_only_when_delivered(guard: Guard) -> None:
    assert guard.delivery("t-1", 1) is None
    assert not guard.record_wake("t-1", 1, attempt="task-1")  # never delivered
    guard.record_delivery("t-1", _event(1))
    guard.record_delivery("t-1", _event(1, key="RF-other"))  # append-only: the first stays
    assert guard.delivery("t-1", 1) == _event(1)
    assert guard.delivery("t-2", 1) is None  # delivered to t-1, not to t-2
    assert guard.record_wake("t-1", 1, attempt="task-1")
    assert guard.record_wake("t-1", 1, attempt="task-1")  # the same attempt, re-run
    assert not guard.record_wake("t-1", 1, attempt="task-2")


def test_a_wait_holds_until_the_event_it_waits_for_wakes_the_thread(guard: Guard) -> None:
    wait = EventWait(event="refund.settled", key="RF-1", step=0, why="the bank settles later")
    guard.record_wait("t-1", wait, digest="sha256:refund")
    guard.record_wait("t-1", wait, digest="sha256:other")  # the first action's wait stays
    assert guard.waiting("t-1") == (("refund.settled", "RF-1", "sha256:refund"),)
    assert guard.waiting("t-2") == ()
    guard.record_delivery("t-1", _event(1, key="RF-2"))  # another refund's event
    assert guard.record_wake("t-1", 1, attempt="task-1")
    assert guard.waiting("t-1") != ()  # not the event it waits for
    guard.record_delivery("t-1", _event(2))
    assert guard.record_wake("t-1", 2, attempt="task-2")
    assert guard.waiting("t-1") == ()
    assert guard.facts("t-1").waiting == ()


def test_the_facts_are_read_in_one_call(guard: Guard) -> None:
    guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    guard.record_rejection("t-1", "sha256:b", by="ann")
    guard.record_taint("t-1", [evidence(chunk_id="wiki:1", trust_tier="wiki")])
    guard.record_requester("t-1", "ann")
    facts = guard.facts("t-1")
    assert facts.spent == {"sha256:a"} and facts.rejected == {"sha256:b"}
    assert [e.chunk_id for e in facts.taint] == ["wiki:1"] and facts.requester == "ann"
    assert guard.facts("t-1", attempt="task-1").spent == frozenset()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement a psycopg connection executes from here on, as its text."""
    seen: list[str] = []
    execute = psycopg.Connection.execute
    monkeypatch.setattr(
        psycopg.Connection,
        "execute",
        lambda conn, sql, *a, **kw: seen.append(str(sql)) or execute(conn, sql, *a, **kw),
    )
    return seen


def test_the_postgres_guard_reads_its_facts_in_one_statement(
    postgres_url: str, tmp_path: Path, statements: list[str]
) -> None:
    """Every node that checks reads the facts: one round trip, one snapshot (issue 26), with
    each fact as the single reads give it, in the order it entered."""
    guard = open_stores(_settings(tmp_path, postgres_url)).guard
    assert isinstance(guard, PostgresGuard)
    guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    guard.record_taint("t-1", [evidence(chunk_id="wiki:2", trust_tier="wiki")])
    guard.record_taint("t-1", [evidence(chunk_id="wiki:1", trust_tier="wiki")])
    for key in ("RF-2", "RF-1"):
        wait = EventWait(event="refund.settled", key=key, step=0, why="the bank settles later")
        guard.record_wait("t-1", wait, digest=f"sha256:{key}")
    guard.record_request("t-1", "Refund C-1")
    guard.record_records("t-1", {"customer": {"id": "C-1"}})
    guard.facts("t-1")  # the tables made, once per process: not what is counted
    statements.clear()
    facts = guard.facts("t-1", attempt="task-2")
    assert len([s for s in statements if "keel_guard" in s]) == 1
    assert facts.requests == ("Refund C-1",)
    assert facts.records == ({"customer": {"id": "C-1"}},)
    assert facts.spent == guard.spent("t-1", attempt="task-2") == {"sha256:a"}
    assert [e.chunk_id for e in facts.taint] == ["wiki:2", "wiki:1"]
    assert facts.waiting == guard.waiting("t-1")
    assert [k for _, k, _ in facts.waiting] == ["RF-2", "RF-1"]
    assert facts.rejected == frozenset() and facts.requester is None


def test_what_vouches_for_an_argument_is_append_only_per_thread(guard: Guard) -> None:
    """The request intake took and the records the planner read (``tools.provenance``): kept
    once each, in order, per thread, and read with the other facts."""
    guard.record_request("t-1", "Refund C-1, please")
    guard.record_records("t-1", {"customer": {"id": "C-1", "email": "a@b.example"}})
    guard.record_records("t-1", {"customer": {"email": "a@b.example", "id": "C-1"}})  # again
    guard.record_records("t-1", {"invoice": {"id": "INV-1", "amount": 49.0}})
    guard.record_request("t-1", "Refund C-1, please")  # intake re-run
    assert guard.requests("t-1") == ["Refund C-1, please"]
    assert guard.records("t-1") == [
        {"customer": {"email": "a@b.example", "id": "C-1"}},
        {"invoice": {"amount": 49.0, "id": "INV-1"}},
    ]
    facts = guard.facts("t-1")
    assert facts.requests == ("Refund C-1, please",)
    assert list(facts.records) == guard.records("t-1")
    assert guard.facts("t-2").requests == () and guard.records("t-2") == []


def test_a_validated_plan_is_known_in_its_thread_only(guard: Guard) -> None:
    step = Step(tool="get_invoice", args={"invoice_id": "INV-1"}, purpose="p", effect="read")
    plan = Plan(intent="i", steps=[step])
    other = Plan(intent="i", steps=[step.model_copy(update={"args": {"invoice_id": "INV-2"}})])
    assert not guard.validated_plan("t-1", plan_digest(plan))
    guard.record_validated_plan("t-1", plan_digest(plan))
    guard.record_validated_plan("t-1", plan_digest(plan))  # the validator ran again
    assert guard.validated_plan("t-1", plan_digest(plan))
    assert not guard.validated_plan("t-1", plan_digest(other))
    assert not guard.validated_plan("t-2", plan_digest(plan))


def test_the_facts_say_whether_a_plan_was_validated_in_the_same_read(guard: Guard) -> None:
    """The executor reads the guard's facts and the validated plan at once (issue 26)."""
    step = Step(tool="get_invoice", args={"invoice_id": "INV-1"}, purpose="p", effect="read")
    digest = plan_digest(Plan(intent="i", steps=[step]))
    guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
    assert guard.facts("t-1").plan_validated is None  # not asked
    assert guard.facts("t-1", plan=digest).plan_validated is False
    guard.record_validated_plan("t-1", digest)
    facts = guard.facts("t-1", attempt="task-2", plan=digest)
    assert facts.plan_validated is True and facts.spent == {"sha256:a"}
    assert guard.facts("t-2", plan=digest).plan_validated is False


def test_the_approval_history_is_append_only_per_kind_and_key(guard: Guard) -> None:
    guard.add_review_entry("t-1", "shown", "task-1", '{"n": 1}')
    guard.add_review_entry("t-1", "proposed", "task-1", '{"n": 2}')  # another kind, same key
    guard.add_review_entry("t-1", "shown", "task-1", '{"n": 3}')  # the node ran again: kept once
    guard.add_review_entry("t-2", "shown", "task-1", '{"n": 4}')
    assert guard.review_entries("t-1") == ['{"n": 1}', '{"n": 2}']
    assert guard.review_entries("t-2") == ['{"n": 4}'] and guard.review_entries("t-3") == []


def test_the_facts_read_the_approval_history_when_asked(guard: Guard) -> None:
    """The approval node reads the guard's facts and the approval history at once (issue 26)."""
    guard.add_review_entry("t-1", "shown", "task-1", '{"n": 1}')
    guard.add_review_entry("t-1", "proposed", "req-1:bob", '{"n": 2}')
    assert guard.facts("t-1").reviews is None  # not asked
    facts = guard.facts("t-1", reviews=True)
    assert facts.reviews == ('{"n": 1}', '{"n": 2}') == tuple(guard.review_entries("t-1"))
    assert guard.facts("t-2", reviews=True).reviews == ()


def test_a_refund_thread_reads_its_approval_history_with_the_guards_facts(
    home: Path, postgres_url: str, statements: list[str]
) -> None:
    """The approval node, run to its interrupt and again on the resume, reads the approval
    history in its read of the guard's facts and writes its request's entry once: it read the
    history on its own three times and wrote the entry twice (issue 26)."""
    with KeelApp.open(_settings(home, postgres_url)) as app:
        app.run(REFUND_REQUEST, thread_id="t-reviews")
        done = app.resume("t-reviews", Decision(kind="approve", reviewer="ann"))
        touching = [s for s in statements if "keel_guard_reviews" in s]
        assert done.status == "done"
        assert app.context.reviews is not None
        assert [e.kind for e in app.context.reviews.entries("t-reviews")] == ["shown"]
    assert [s for s in touching if s.startswith("SELECT entry")] == []
    assert len([s for s in touching if s.startswith("INSERT")]) == 1
    assert len([s for s in touching if s.startswith("SELECT ARRAY(")]) == 2  # each approve run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_workers_share_the_approval_history_through_the_guards_store(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Two workers' contexts (two homes: two machines) on one deployment read one approval
    history: in the guard's store, never a file in a worker's home."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    first = open_stores(_settings(tmp_path / "a", url)).reviews
    shown = ReviewEntry("shown", "task-1", by="ann", digests=("sha256:a",), revision=2,
                        request_id="req-1")  # fmt: skip
    first.add("t-1", shown)
    first.add("t-1", ReviewEntry("proposed", "req-1:bob", by="bob"))
    if url is not None:
        second = open_stores(_settings(tmp_path / "b", url)).reviews
        assert second.entries("t-1") == [shown, ReviewEntry("proposed", "req-1:bob", by="bob")]
    assert not (tmp_path / "a" / "reviews.sqlite").exists()
    assert open_stores(_settings(tmp_path / "a", url)).reviews.entries("t-1")[0] == shown


def test_the_context_keeps_the_approval_history_in_its_guard(tmp_path: Path) -> None:
    ctx = KeelContext.from_settings(_settings(tmp_path, None))
    assert ctx.reviews is not None and ctx.guard is not None
    ctx.reviews.add("t-1", ReviewEntry("proposed", "r-1:ann", by="ann"))
    assert len(ctx.guard.review_entries("t-1")) == 1


def test_the_sqlite_guard_lives_in_the_intent_ledgers_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None)
    guard = open_stores(settings).guard
    assert isinstance(guard, SqliteGuard) and guard.path == settings.intent_db


def test_a_guard_whose_server_is_gone_is_one_error_naming_the_setting(tmp_path: Path) -> None:
    guard = PostgresGuard("postgresql://keel@127.0.0.1:9/keel", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable, match="KEEL_POSTGRES_URL") as caught:
        guard.spent("t-1")
    assert "thread guard" in str(caught.value)


def test_a_refund_pays_once_with_the_guard_in_postgres(home: Path, postgres_url: str) -> None:
    """Break 2 on the Postgres stores: a finished thread sent back to ``execute`` with its
    results erased and the cursor at -1 refunds and e-mails nothing more."""
    settings = _settings(home, postgres_url)
    backend = DemoBackend(settings.domain_db)
    with KeelApp.open(settings) as app:
        waiting = app.run(REFUND_REQUEST, thread_id="t-pg")
        assert app.resume("t-pg", Decision(kind="approve", reviewer="ann")).status == "done"
        assert isinstance(app.context.guard, PostgresGuard)
        assert app.context.guard.spent("t-pg") == {
            r.digest for r in app.show(waiting.thread_id).results if r.digest
        }
        for cursor in (-1, 0, 1):
            app.graph.invoke(
                Command(
                    update={"results": {"__overwrite__": []}, "cursor": cursor}, goto="execute"
                ),
                {"configurable": {"thread_id": "t-pg"}}, context=app.context, durability="sync",
            )  # fmt: skip
    assert (len(backend.refunds()), len(backend.outbox())) == (1, 1)


def test_the_engine_bench_reads_a_thread_s_writes_from_postgres(
    home: Path, postgres_url: str
) -> None:
    """``keel bench --only engine`` reads one thread's supersteps from the engine's
    checkpoints: here a refund thread's, in the same tables, with no write that changes
    nothing."""
    from evals.bench_engine import thread_writes_of

    with KeelApp.open(_settings(home, postgres_url)) as app:
        app.run(REFUND_REQUEST, thread_id="t-probe")
        assert app.resume("t-probe", Decision(kind="approve", reviewer="ann")).status == "done"
    tasks = thread_writes_of(postgres_url, "keel", "t-probe")
    nodes = [t.node for t in tasks]
    # Both steps, their checks and the answer are one ``execute`` task (no ``respond`` task).
    assert nodes.count("execute") == 1 and "approve" in nodes and "respond" not in nodes
    [executed] = [t for t in tasks if t.node == "execute"]
    assert {"results", "result_verdict", "answer", "status"} <= {w.channel for w in executed.writes}
    assert all(w.changed for t in tasks for w in t.writes)


def test_a_receipt_consumed_and_its_intent_are_one_transaction(
    tmp_path: Path, postgres_url: str
) -> None:
    """The executor consumes the receipt and writes the intent in ``ledger.atomic()``: they
    commit together (one round trip and one commit less, issue 26), and when the block fails
    before its commit, neither the receipt nor the intent is written."""
    from stores.ledger_postgres import PostgresLedger

    guard = open_stores(_settings(tmp_path, postgres_url)).guard
    ledger = PostgresLedger(postgres_url)
    assert isinstance(guard, PostgresGuard)
    with ledger.atomic():
        assert guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
        ledger.begin("key-a", "t-1", 0, "refund_charge", "sha256:a")
        in_block = guard._tables.execute("SELECT txid_current_if_assigned()::text")[0][0]
        assert in_block == ledger._tables.execute("SELECT txid_current_if_assigned()::text")[0][0]
        assert in_block is not None  # one write transaction for both stores
    assert guard.spent("t-1") == {"sha256:a"} and ledger.get("key-a") is not None

    with pytest.raises(ZeroDivisionError), ledger.atomic():
        assert guard.consume_receipt("t-1", "sha256:b", attempt="task-2", approved_by="ann")
        ledger.begin("key-b", "t-1", 1, "send_email", "sha256:b")
        raise ZeroDivisionError  # the block fails before its commit
    assert guard.spent("t-1") == {"sha256:a"} and ledger.get("key-b") is None


def test_an_intent_done_and_its_receipt_settled_are_one_statement(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor marks the intent done and settles its receipt in ``ledger.atomic()``, and
    nothing in the block reads: the writes are one statement at the block's end (atomic as any
    statement), not a transaction of four (BEGIN, two updates, COMMIT; issue 26). A block that
    fails writes nothing."""
    from stores.ledger_postgres import PostgresLedger

    guard = open_stores(_settings(tmp_path, postgres_url)).guard
    ledger = PostgresLedger(postgres_url)
    assert isinstance(guard, PostgresGuard)
    for key, digest in (("key-a", "sha256:a"), ("key-b", "sha256:b")):
        assert guard.consume_receipt("t-1", digest, attempt="task-1", approved_by="ann")
        ledger.begin(key, "t-1", 0, "refund_charge", digest)
    # The server says which statement wrote each table.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE wrote (tab TEXT, query TEXT);"
            " CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO wrote VALUES (TG_TABLE_NAME, current_query()); RETURN NULL; END $$;"
            " CREATE TRIGGER noted AFTER UPDATE ON keel_intents"
            " FOR EACH STATEMENT EXECUTE FUNCTION note_write();"
            " CREATE TRIGGER noted AFTER UPDATE ON keel_guard_receipts"
            " FOR EACH STATEMENT EXECUTE FUNCTION note_write();"
        )
    opened: list[object] = []
    transaction = psycopg.Connection.transaction
    monkeypatch.setattr(
        psycopg.Connection,
        "transaction",
        lambda conn, *a, **kw: opened.append(conn) or transaction(conn, *a, **kw),
    )
    with ledger.atomic():
        ledger.finish("key-a", {"refund_id": "RF-1"})
        guard.settle_receipt("t-1", "sha256:a")
    assert opened == []  # no BEGIN and no COMMIT around it
    with pytest.raises(ZeroDivisionError), ledger.atomic():
        ledger.finish("key-b", {"refund_id": "RF-2"})
        guard.settle_receipt("t-1", "sha256:b")
        raise ZeroDivisionError  # the block fails before its end
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        wrote = conn.execute("SELECT tab, query FROM wrote").fetchall()
    assert sorted(tab for tab, _ in wrote) == ["keel_guard_receipts", "keel_intents"]
    assert len({query for _, query in wrote}) == 1  # one statement wrote both
    found = ledger.get("key-a")
    assert found is not None and found.status == "done" and found.answer == {"refund_id": "RF-1"}
    assert guard.spent("t-1", attempt="task-1") == {"sha256:a"}  # settled: spent for all
    assert ledger.get("key-b") == Intent("key-b", "pending", None)


@pytest.mark.integration
def test_an_app_on_postgres_gives_back_the_shared_pool_it_opened(
    home: Path, postgres_url: str
) -> None:
    """The stores ``KeelApp.open`` opened share one pool per database in the process; closing the
    app lets go of it, so a process that opens apps one after another holds no connection of
    the closed ones."""
    from stores.postgres_tables import PROCESS_POOLS

    before = set(PROCESS_POOLS._pools)
    with KeelApp.open(_settings(home, postgres_url)) as app:
        waiting = app.run(REFUND_REQUEST)
        done = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
        assert done.status == "done"
        assert set(PROCESS_POOLS._pools) - before, "the run took no pooled connection"
    assert set(PROCESS_POOLS._pools) - before == set()
