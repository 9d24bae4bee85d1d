"""Keel's own stores follow the checkpoints to PostgreSQL: the event inbox, the flight record and
the approval key, on a real cluster the tests start themselves (``conftest.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domains.support_desk.backend import DemoBackend
from graph.state import DomainEvent, EventWait, Receipt
from keel.app import Decision, KeelApp
from keel.errors import BadRequest, RelayBusy, StoreUnavailable
from keel.settings import Settings
from observability.record_events import RecordEvent, RunEnded
from stores.backends import open_stores
from stores.flight_record import FlightRecord
from stores.inbox import Inbox, SqliteInbox
from stores.inbox_postgres import PostgresInbox
from tests.conftest import APPROVAL_KEY, REFUND_REQUEST
from tools.permissions import ReceiptSigner

KEEL = str(Path(sys.executable).parent / "keel")
SEPA_REQUEST = (
    "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge"
)
pytestmark = pytest.mark.integration


def _keel(home: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    clean.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **env)
    return subprocess.run(
        [KEEL, *argv, "--json"], env=clean, cwd=home, capture_output=True, text=True, timeout=180
    )


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _settings(home: Path, url: str | None) -> Settings:
    return Settings(home=home, postgres_url=url, _env_file=None)  # type: ignore[call-arg, arg-type]


# -- the event inbox: one contract, both backends --------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Inbox:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return open_stores(_settings(tmp_path, url)).inbox


def _event(seq: int, key: str = "RF-1") -> DomainEvent:
    return DomainEvent(seq=seq, type="refund.settled", key=key, payload={}, created_at="now")


def test_the_inbox_contract(inbox: Inbox) -> None:
    wait = EventWait(event="refund.settled", key="RF-1", step=0, why="the bank settles later")
    inbox.subscribe("t-1", wait)
    inbox.subscribe("t-1", wait)  # the node runs again on resume: still one subscription
    inbox.subscribe("t-2", wait)
    assert sorted(inbox.waiting_for(_event(1))) == ["t-1", "t-2"]
    assert inbox.waiting_for(_event(1, key="RF-2")) == []

    inbox.delivered("t-1", _event(1))
    assert inbox.waiting_for(_event(1)) == ["t-2"]
    inbox.subscribe("t-1", wait)  # a re-run of the node does not undo the delivery
    assert inbox.waiting_for(_event(1)) == ["t-2"]

    assert inbox.cursor() == 0
    inbox.advance(5)
    inbox.advance(3)  # a slower relay finishing late never moves the cursor back
    assert inbox.cursor() == 5
    inbox.restart()  # the domain's outbox was reset
    assert inbox.cursor() == 0


def test_a_second_relay_waits_for_the_first_and_gives_up_clearly(inbox: Inbox) -> None:
    other = (  # another relay: its own connection (Postgres) or its own open file (SQLite)
        PostgresInbox(inbox.url) if isinstance(inbox, PostgresInbox) else SqliteInbox(inbox.path)
    )
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with inbox.relaying():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(10)
    with pytest.raises(RelayBusy, match="another `keel events` relay"), other.relaying(0.3):
        pass
    release.set()
    started = time.monotonic()
    with other.relaying(wait_s=5):  # the first is done: the turn is free
        assert time.monotonic() - started < 5
    holder.join()


def test_a_relay_killed_mid_pass_frees_its_turn(postgres_url: str, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from stores.inbox_postgres import PostgresInbox\n"
         "with PostgresInbox(sys.argv[1]).relaying():\n"
         "    print('holding', flush=True); time.sleep(60)",
         postgres_url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    inbox = PostgresInbox(postgres_url)
    with pytest.raises(RelayBusy), inbox.relaying(wait_s=0.3):
        pass
    holder.kill()
    holder.wait()
    with inbox.relaying(wait_s=10):  # the session ended with the process: so did the lock
        pass


def test_an_inbox_whose_server_is_gone_is_one_error_naming_the_setting(tmp_path: Path) -> None:
    inbox = PostgresInbox("postgresql://keel:s3cret@127.0.0.1:1/keel", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable) as caught:
        inbox.cursor()
    message = str(caught.value)
    assert message.startswith("KEEL_POSTGRES_URL=postgresql://keel:***@127.0.0.1:1/keel: ")
    assert "event inbox" in message and "s3cret" not in message and "\n" not in message


# -- a thread that waits for the world, woken through the Postgres inbox ----------------------


def test_a_refund_waiting_for_the_bank_is_woken_through_the_postgres_inbox(
    home: Path, postgres_url: str
) -> None:
    settings = _settings(home, postgres_url)
    with KeelApp.open(settings) as app:
        waiting = app.run(SEPA_REQUEST, thread_id="t-sepa")
        waiting = app.resume("t-sepa", Decision(kind="approve", reviewer="ann"))
        assert waiting.status == "awaiting_event" and waiting.waiting is not None
        refund_id = waiting.waiting.key
        backend = DemoBackend(settings.domain_db)
        assert backend.settle_pending_refunds() == [refund_id]
        delivered = app.dispatch_events()
        assert delivered == [
            {"seq": 1, "type": "refund.settled", "key": refund_id, "woke": ["t-sepa"]}
        ]
        assert app.show("t-sepa").status == "done"
    assert [m["recipient"] for m in backend.outbox()] == ["katherine@example.com"]
    with psycopg.connect(postgres_url) as conn:
        subs = conn.execute(
            "SELECT thread_id, key, delivered_seq FROM keel_subscriptions"
        ).fetchall()
        cursor = conn.execute("SELECT seq FROM keel_relay").fetchall()
    assert subs == [("t-sepa", refund_id, 1)] and cursor == [(1,)]
    assert not (home / "events.sqlite").exists()  # the inbox is in Postgres, not in the home


def test_two_relays_started_together_wake_the_thread_once(home: Path, postgres_url: str) -> None:
    pg = {"KEEL_POSTGRES_URL": postgres_url, **APPROVAL_KEY}
    thread = _json(_keel(home, pg, "run", SEPA_REQUEST))["thread_id"]
    assert _json(_keel(home, pg, "resume", thread, "--approve"))["status"] == "awaiting_event"
    backend = DemoBackend(home / "support_desk.sqlite")
    assert len(backend.settle_pending_refunds()) == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **pg)
    relays = [
        subprocess.Popen([KEEL, "events", "--json"], env=env, cwd=home, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    reports = []
    for relay in relays:
        out, err = relay.communicate(timeout=180)
        assert relay.returncode == 0, err
        reports.append(json.loads(out)["events"])
    woken = [t for report in reports for event in report for t in event["woke"]]
    assert woken == [thread]  # one relay woke it; the other read past the event, or nothing
    assert _json(_keel(home, pg, "show", thread))["status"] == "done"
    assert [m["recipient"] for m in backend.outbox()] == ["katherine@example.com"]


# -- the flight record in Postgres ------------------------------------------------------------


@pytest.fixture
def record(postgres_url: str, tmp_path: Path) -> Iterator[FlightRecord]:
    store = open_stores(_settings(tmp_path, postgres_url)).flight_record
    yield store
    store.close()


def _recorded(run_id: str = "run-1") -> RecordEvent:
    return RecordEvent(
        run_id=run_id, thread_id="t-1", segment=0, at="2026-12-02T00:00:00+00:00",
        payload=RunEnded(status="done", duration_ms=1.0),
    )  # fmt: skip


def test_the_database_refuses_to_change_or_remove_a_recorded_event(
    record: FlightRecord, postgres_url: str
) -> None:
    seq = record.append(_recorded())
    for statement in ("UPDATE keel_events SET kind = 'x'", "DELETE FROM keel_events",
                      "TRUNCATE keel_events"):  # fmt: skip
        with (
            psycopg.connect(postgres_url, autocommit=True) as conn,  # anyone, not only Keel
            pytest.raises(psycopg.Error, match="append-only"),
        ):
            conn.execute(statement)  # type: ignore[arg-type]
    assert [e.seq for e in record.events("run-1")] == [seq]


def test_an_event_of_another_schema_version_is_refused_on_read(
    record: FlightRecord, postgres_url: str
) -> None:
    record.append(_recorded())
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO keel_events (schema_version, run_id, thread_id, segment, kind, at,"
            " payload) SELECT 999, run_id, thread_id, 1, kind, at, payload FROM keel_events"
        )
    with pytest.raises(BadRequest, match="record schema 999"):
        record.events("run-1")


def test_a_run_is_found_by_id_thread_or_prefix(record: FlightRecord) -> None:
    record.append(_recorded("abcd-1234"))
    record.append(_recorded("abce-5678"))
    assert record.resolve("abcd-1234") == "abcd-1234"
    assert record.resolve("t-1") == "abce-5678"  # the thread's latest run
    assert record.resolve("abcd") == "abcd-1234"
    with pytest.raises(BadRequest, match="more than one run"):
        record.resolve("abc")
    assert record.run_ids() == ["abce-5678", "abcd-1234"] and record.count() == 2
    assert record.next_segment("abcd-1234") == 1


def test_runs_trace_explain_and_replay_read_the_postgres_record(
    home: Path, postgres_url: str
) -> None:
    pg = {"KEEL_POSTGRES_URL": postgres_url, **APPROVAL_KEY}
    thread = _json(_keel(home, pg, "run", REFUND_REQUEST))["thread_id"]
    run_id = _json(_keel(home, pg, "resume", thread, "--approve"))["run_id"]
    assert not (home / "records.sqlite").exists()  # recorded in Postgres only

    runs = _json(_keel(home, pg, "runs"))
    assert [(r["run_id"], r["status"], r["approvals"]) for r in runs["runs"]] == [
        (run_id, "done", 1)
    ]
    tree = _json(_keel(home, pg, "trace", run_id))
    assert run_id in tree["label"] and [s["kind"] for s in tree["children"]] == ["segment"] * 2
    why = _json(_keel(home, pg, "explain", thread))
    assert why["run_id"] == run_id and why["status"] == "done"
    replay = _json(_keel(home, pg, "replay", run_id[:8]))
    assert replay["same"] is True and replay["first_divergence"] is None

    # Another home (another machine) with the same database sees the same record.
    other = home.parent / "other-home"
    other.mkdir()
    assert _json(_keel(other, pg, "explain", run_id))["run_id"] == run_id
    # Without the database, that home has no record: one line, exit 2.
    alone = _keel(other, {}, "trace", run_id)
    assert alone.returncode == 2 and "no flight record" in alone.stderr


# -- the approval key -------------------------------------------------------------------------


def _receipt() -> Receipt:
    return Receipt(
        tool="refund_charge", digest="sha256:abc", thread_id="t-1", approved_by="ann",
        approved_at="2026-12-02T00:00:00+00:00", expires_at="2026-12-03T00:00:00+00:00",
    )  # fmt: skip


def test_two_homes_with_one_secret_verify_each_others_receipts(tmp_path: Path) -> None:
    key = APPROVAL_KEY["KEEL_APPROVAL_KEY"]
    (tmp_path / "a").mkdir()
    secret_file = tmp_path / "mounted-secret"
    secret_file.write_text(key + "\n")
    a = ReceiptSigner.from_settings(
        Settings(home=tmp_path / "a", approval_key=key, _env_file=None)  # type: ignore[call-arg, arg-type]
    )
    b = ReceiptSigner.from_settings(
        Settings(home=tmp_path / "b", approval_key_file=secret_file, _env_file=None)  # type: ignore[call-arg]
    )
    signed = a.sign(_receipt())
    assert b.valid(signed) and a.valid(b.sign(_receipt()))
    assert not (tmp_path / "a" / "approval.key").exists()  # a key setting writes no file
    assert not (tmp_path / "b").exists()
    assert key not in repr(a)
    own = ReceiptSigner.for_home(tmp_path / "c")  # the single-machine default: a key per home
    assert not own.valid(signed)


def test_a_receipt_made_on_one_worker_is_honoured_by_another(home: Path, postgres_url: str) -> None:
    """Two homes (two machines) on one database and one secret: an approval given through one
    is executed by the other, whose gate checks the receipt with the same key."""
    pg = {"KEEL_POSTGRES_URL": postgres_url, **APPROVAL_KEY}
    other = home.parent / "worker-2"
    other.mkdir()
    thread = _json(_keel(home, pg, "run", REFUND_REQUEST))["thread_id"]
    # The company's systems are one for both machines: here, the first home's demo backend.
    systems = {**pg, "KEEL_DOMAIN_BACKEND": str(home / "support_desk.sqlite")}
    assert _json(_keel(other, systems, "resume", thread, "--approve"))["status"] == "done"
    assert not (home / "approval.key").exists() and not (other / "approval.key").exists()
    backend = DemoBackend(home / "support_desk.sqlite")
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]


def test_postgres_without_a_key_and_a_malformed_key_are_refused_in_one_line(
    home: Path, postgres_url: str
) -> None:
    no_key = _keel(home, {"KEEL_POSTGRES_URL": postgres_url}, "run", REFUND_REQUEST)
    assert no_key.returncode == 2
    line = no_key.stderr.strip()
    assert "\n" not in line and "KEEL_APPROVAL_KEY" in line and "every worker" in line
    with psycopg.connect(postgres_url) as conn:  # refused before anything was written
        assert conn.execute("SELECT to_regclass('checkpoints')").fetchone() == (None,)

    short = "ab" * 31 + "s3"
    bad = _keel(home, {"KEEL_POSTGRES_URL": postgres_url, "KEEL_APPROVAL_KEY": short}, "show", "x")
    assert bad.returncode == 2
    assert "must be 64 hex characters" in bad.stderr and short not in bad.stderr
    assert "\n" not in bad.stderr.strip()


def test_a_batch_of_events_is_one_transaction_and_reads_back_in_order(
    record: FlightRecord,
) -> None:
    batch = [_recorded("run-b").model_copy(update={"segment": i}) for i in range(50)]
    record.append_many(batch)
    assert [e.segment for e in record.events("run-b")] == list(range(50))


def test_a_batch_of_events_is_one_insert_statement_and_keeps_every_field(
    record: FlightRecord, postgres_url: str
) -> None:
    # The server counts the INSERT statements on the table (a trigger per statement, not per
    # row): a batch of a served run's events was one statement per event (issue 26).
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        record.count()  # the table exists
        conn.execute(
            "CREATE TABLE inserts (n INT); INSERT INTO inserts VALUES (0);"
            " CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE inserts SET n = n + 1; RETURN NULL; END $$;"
            " CREATE TRIGGER counted AFTER INSERT ON keel_events"
            " FOR EACH STATEMENT EXECUTE FUNCTION count_insert();"
        )
    texts = ["plain", "quote ' and \" double", "back\\slash {brace,} NULL", "é 日本 \n line"]
    batch = [
        RecordEvent(
            run_id="run-c", thread_id=f"t-{i % 2}", segment=i,
            checkpoint_id=None if i % 2 else f"cp-{i}", node=None if i % 3 else texts[i % 4],
            step=None if i % 2 else i, at=f"2026-12-02T00:00:{i:02d}+00:00",
            payload=RunEnded(status="done", answer=texts[i % 4], duration_ms=i / 3),
        )
        for i in range(7)
    ]  # fmt: skip
    record.append_many(batch)
    record.append_many([])  # nothing to store: no statement
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT n FROM inserts").fetchone() == (1,)
    stored = record.events("run-c")
    assert [e.model_copy(update={"seq": None}) for e in stored] == batch  # in order, unchanged
    seqs = [e.seq or 0 for e in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(batch)


# -- one pool per process for Keel's own stores --------------------------------------------------


def test_keels_stores_share_one_pool_and_a_ledger_statement_opens_no_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stores.ledger_postgres import PostgresLedger
    from stores.postgres_tables import SharedPools

    opened: list[str] = []
    real = psycopg.Connection.connect

    def counting(cls: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append("connect")
        return real.__func__(cls, *args, **kwargs)  # type: ignore[attr-defined]

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(counting))
    ledger, inbox = PostgresLedger(postgres_url), PostgresInbox(postgres_url)
    for step in range(10):
        key = f"keel-pool-{step}"
        ledger.begin(key, "t-pool", step, "refund_charge", "sha256:x")
        ledger.finish(key, {"refund_id": f"RF-{step}"})
        found = ledger.get(key)
        assert found is not None and found.status == "done"
    inbox.cursor()
    # 31 statements from two stores: before, the ledger opened a connection for each one.
    assert len(opened) <= SharedPools.MIN_SIZE
    assert ledger._tables._pool is inbox._tables._pool  # one pool for the process's stores


def _last_query(postgres_url: str, pid: int) -> str | None:
    """What the server says the backend ``pid`` ran last (None: no such backend)."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def pool_of_two(postgres_url: str) -> Iterator[Any]:
    """A pool of two autocommit connections from the process's shared pools, released after."""
    from stores.postgres_tables import SharedPools

    pools = SharedPools()
    pool = pools.acquire(postgres_url, {"autocommit": True}, size=2, timeout_s=5)
    try:
        yield pool
    finally:
        pools.release(pool)


def test_a_healthy_pooled_connection_is_handed_out_again_without_a_round_trip(
    postgres_url: str, pool_of_two: Any
) -> None:
    seen: dict[int, str] = {}
    for turn in range(6):
        with pool_of_two.connection() as conn:
            pid = conn.info.backend_pid
            if pid in seen:
                # Handed out again: the server saw nothing since its last statement (the pool's
                # check used to send an empty one on every checkout, issue 26).
                assert _last_query(postgres_url, pid) == seen[pid]
            marker = f"SELECT 'keel-pool-turn-{turn}'"
            conn.execute(marker)
            seen[pid] = marker
    assert len(seen) < 6  # connections were handed out again, so the check above ran


def test_a_pooled_connection_the_server_closed_a_moment_ago_is_replaced(
    postgres_url: str, pool_of_two: Any
) -> None:
    with pool_of_two.connection() as conn:
        conn.execute("SELECT 1")
        first = conn.info.backend_pid
    # A restart or an administrator ends the backend while the connection sits in the pool, a
    # moment after it was returned (well within the check's idle limit).
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (first,))
    assert _last_query(postgres_url, first) is None
    for _ in range(3):  # every connection the pool still holds: each is replaced or fine
        with pool_of_two.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != first
