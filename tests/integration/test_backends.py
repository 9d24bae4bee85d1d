"""One contract, every backend: what Keel promises holds on SQLite and Postgres checkpoints, and on
the embedded Chroma index and a Chroma server.

The checkpointer contract runs the `keel` CLI in separate OS processes configured only by KEEL_*
settings: a refund stops at its approval in one process and is finished by another, exactly once.
The retrieval contract asks both indexes the same questions and expects the same answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from domains.support_desk import RETRIEVAL_QUESTIONS
from keel.servers import ChromaServer, PostgresServer
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from stores.ledger import SqliteLedger
from tests.conftest import APPROVAL_KEY, REFUND_REQUEST
from tests.integration.cli import KEEL
from tests.integration.cli import json_of as _json
from tests.integration.cli import keel as _keel
from tests.integration.cli import side_effects as _side_effects

QUESTIONS = RETRIEVAL_QUESTIONS


def _postgres_threads(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT DISTINCT thread_id FROM checkpoints").fetchall()
    return {r[0] for r in rows}


# -- the checkpointer contract ------------------------------------------------------------------


@pytest.mark.integration
def test_an_approval_asked_in_one_process_is_finished_by_another(
    home: Path, checkpointer: dict[str, str]
) -> None:
    started = _json(_keel(home, checkpointer, "run", REFUND_REQUEST))
    assert started["status"] == "awaiting_approval"
    thread = started["thread_id"]

    resumed = _json(_keel(home, checkpointer, "resume", thread, "--approve"))
    assert resumed["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])

    # A second approval of the same question, from yet another process, finds nothing pending.
    again = _keel(home, checkpointer, "resume", thread, "--approve")
    assert again.returncode == 2
    assert "not awaiting approval" in again.stderr
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert _json(_keel(home, checkpointer, "show", thread))["status"] == "done"

    # The thread lives where the settings say, and only there.
    if url := checkpointer.get("KEEL_POSTGRES_URL"):
        assert _postgres_threads(url) == {thread}
        assert not (home / "checkpoints.sqlite").exists()
    else:
        assert (home / "checkpoints.sqlite").exists()


@pytest.mark.integration
def test_two_processes_approving_at_once_refund_once(
    home: Path, checkpointer: dict[str, str]
) -> None:
    """A double-clicked Approve reaching two workers: both resume, the backend acts once."""
    thread = _json(_keel(home, checkpointer, "run", REFUND_REQUEST))["thread_id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **checkpointer)
    argv = [KEEL, "resume", thread, "--approve", "--json"]
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    both = [subprocess.Popen(argv, env=env, cwd=home, **pipes) for _ in range(2)]
    codes = [p.wait(timeout=180) for p in both]
    for p in both:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert 0 in codes, codes
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert _json(_keel(home, checkpointer, "show", thread))["status"] == "done"


# -- bad settings -------------------------------------------------------------------------------


def _one_line_error(done: subprocess.CompletedProcess[str], setting: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("keel: error: ")
    assert setting in lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.integration
def test_a_wrong_postgres_url_is_one_clear_line_and_loses_no_thread(
    home: Path, postgres_url: str
) -> None:
    closed = "postgresql://keel:s3cret@127.0.0.1:1/keel"
    closed_env = {"KEEL_POSTGRES_URL": closed, **APPROVAL_KEY}
    message = _one_line_error(_keel(home, closed_env, "run", REFUND_REQUEST), "KEEL_POSTGRES_URL")
    assert "s3cret" not in message and ":***@" in message

    missing_db = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    message = _one_line_error(
        _keel(home, {"KEEL_POSTGRES_URL": missing_db, **APPROVAL_KEY}, "run", REFUND_REQUEST),
        "KEEL_POSTGRES_URL",
    )
    assert "no_such_database" in message

    good = {"KEEL_POSTGRES_URL": postgres_url, **APPROVAL_KEY}
    thread = _json(_keel(home, good, "run", REFUND_REQUEST))["thread_id"]
    _one_line_error(
        _keel(home, {"KEEL_POSTGRES_URL": closed, **APPROVAL_KEY}, "resume", thread, "--approve"),
        "KEEL_POSTGRES_URL",
    )
    assert _side_effects(home) == ([], [])
    assert _json(_keel(home, good, "resume", thread, "--approve"))["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])


@pytest.mark.integration
def test_a_chroma_server_that_is_down_is_one_clear_line_before_any_thread(home: Path) -> None:
    from keel.servers import free_port

    down = {"KEEL_CHROMA_URL": f"http://127.0.0.1:{free_port()}"}
    message = _one_line_error(_keel(home, down, "run", REFUND_REQUEST), "KEEL_CHROMA_URL")
    assert "no Chroma server answers" in message
    _one_line_error(_keel(home, {"KEEL_CHROMA_URL": "chroma:8000"}, "run", REFUND_REQUEST),
                    "KEEL_CHROMA_URL")  # fmt: skip
    import sqlite3

    with sqlite3.connect(home / "checkpoints.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)


# -- the retrieval contract ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_store(
    chroma: ChromaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CorpusStore]:
    """The demo corpus ingested into the Chroma server, in a collection of its own."""
    settings = Settings(
        home=tmp_path_factory.mktemp("keel-chroma-client"),
        chroma_url=chroma.url,
        collection=f"keel-{uuid.uuid4().hex[:8]}",
        _env_file=None,  # type: ignore[call-arg]
    )
    store = CorpusStore(settings, embedder_for(settings))
    store.ingest(progress=False)
    yield store


@pytest.fixture(scope="module")
def embedded_store(indexed_home: Path) -> CorpusStore:
    settings = Settings(home=indexed_home, _env_file=None)  # type: ignore[call-arg]
    return CorpusStore(settings, embedder_for(settings))


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest) -> CorpusStore:
    found: CorpusStore = request.getfixturevalue(f"{request.param}_store")
    return found


@pytest.mark.integration
def test_the_index_answers_from_the_current_policy_and_keeps_back_the_rest(
    store: CorpusStore,
) -> None:
    found = store.search("What is our refund window?", 6)
    assert found.evidence[0].source == "refund-policy-v2"
    kept_back = {f.chunk_id.split(":")[0]: f.reason for f in found.filtered}
    assert kept_back.get("refund-policy-v1") == "superseded by refund-policy-v2"
    assert {e.source for e in found.evidence}.isdisjoint({"refund-policy-v1", "wiki-refund-tips"})


@pytest.mark.integration
def test_ingesting_an_unchanged_corpus_again_writes_nothing(store: CorpusStore) -> None:
    before = store.count()
    report = store.ingest(progress=False)
    assert (report.added, report.removed, report.unchanged) == (0, 0, before)


@pytest.mark.integration
def test_the_server_and_the_embedded_index_give_the_same_answers(
    embedded_store: CorpusStore, server_store: CorpusStore
) -> None:
    questions = yaml.safe_load(QUESTIONS.read_text())["questions"][::5]
    assert len(questions) >= 20
    for q in questions:
        embedded = embedded_store.search(q["question"], 6)
        served = server_store.search(q["question"], 6)
        assert [(e.chunk_id, round(e.score, 3)) for e in served.evidence] == [
            (e.chunk_id, round(e.score, 3)) for e in embedded.evidence
        ], q["id"]
        assert [f.chunk_id for f in served.filtered] == [f.chunk_id for f in embedded.filtered]


# -- the Postgres pool --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("behind_pooler", [False, True])
def test_the_pool_survives_connections_the_server_closed_while_a_human_decided(
    home: Path, postgres_url: str, behind_pooler: bool
) -> None:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from stores.backends import open_checkpointer

    settings = Settings(
        home=home,
        postgres_url=postgres_url,  # type: ignore[arg-type]
        postgres_behind_pooler=behind_pooler,
        _env_file=None,  # type: ignore[call-arg]
    )
    with open_checkpointer(settings) as saver:
        assert isinstance(saver, PostgresSaver)
        assert isinstance(saver.conn, ConnectionPool)
        kwargs = saver.conn.kwargs or {}
        assert kwargs["autocommit"] is True and kwargs["row_factory"] is dict_row
        assert kwargs["prepare_threshold"] == (None if behind_pooler else 0)
        config: Any = {"configurable": {"thread_id": "t-idle", "checkpoint_ns": ""}}
        assert saver.get_tuple(config) is None
        # Hours pass; the server (a restart, an idle timeout, a firewall) drops the connections.
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            assert dropped is not None and dropped[0] >= 1
            # ... and the hours pass: the ended backends are gone, their goodbyes on the
            # sockets. (A checkout in the same millisecond as a restart may still get a dead
            # connection: the pool checks with a round trip only a connection that may be dead,
            # ``stores.postgres_pool.LivenessCheck``; that call fails with StoreUnavailable.)
            _until_gone(admin)
        assert saver.get_tuple(config) is None  # not "the connection is closed"


def _until_gone(admin: Any, timeout_s: float = 10.0) -> None:
    """Wait until no backend but ``admin`` is connected to its database."""
    deadline = time.monotonic() + timeout_s
    while admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "the terminated backends did not exit"
        time.sleep(0.02)


@pytest.mark.integration
@pytest.mark.parametrize("behind_pooler", [False, True])
def test_keels_own_tables_follow_the_pooler_setting_too(
    home: Path, postgres_url: str, behind_pooler: bool
) -> None:
    """The flight record, the intent ledger and the event inbox make no server-side prepared
    statements behind a transaction pooler, as the checkpointer does not (TRAPS.md)."""
    from stores.backends import open_stores

    settings = Settings(
        home=home,
        postgres_url=postgres_url,  # type: ignore[arg-type]
        postgres_behind_pooler=behind_pooler,
        _env_file=None,  # type: ignore[call-arg]
    )
    opened = open_stores(settings)
    stores: list[Any] = [opened.flight_record, opened.ledger, opened.inbox]
    for store in stores:
        with store._tables.connection() as conn:
            assert conn.prepare_threshold == (None if behind_pooler else 5)
            for _ in range(8):  # psycopg prepares a statement on its fifth run
                conn.execute("SELECT 1 WHERE %s", (True,))
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
            assert prepared is not None and (prepared[0] == 0) == behind_pooler
    stores[0].close()


@pytest.mark.integration
def test_the_checkpoint_bench_measures_both_backends(postgres_url: str, tmp_path: Path) -> None:
    from evals.bench_checkpoint import bench_checkpoint

    settings = Settings(home=tmp_path, postgres_url=postgres_url, _env_file=None)  # type: ignore[call-arg, arg-type]
    result = bench_checkpoint(settings, writes=30)
    assert result["postgres"]["server"] == "KEEL_POSTGRES_URL"
    for backend in ("sqlite", "postgres"):
        assert all(result[backend][k] > 0 for k in ("put_p50_ms", "put_p95_ms", "get_p50_ms"))
    assert _postgres_threads(postgres_url)  # the Postgres figures came from Postgres


# -- the intent ledger follows the checkpoints --------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from stores.ledger_postgres import PostgresLedger

    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "intents.sqlite")
    return PostgresLedger(request.getfixturevalue("postgres_url"))


@pytest.mark.integration
def test_the_intent_ledger_contract(ledger: Any) -> None:
    assert ledger.get("k1") is None
    ledger.begin("k1", "t-1", 2, "refund_charge", "sha256:a")
    ledger.begin("k1", "t-other", 9, "send_email", "sha256:b")  # a resume writes it again
    assert (ledger.get("k1").status, ledger.get("k1").answer) == ("pending", None)
    ledger.finish("k1", {"refund_id": "RF-5001"})
    assert ledger.get("k1").status == "done"
    assert ledger.get("k1").answer == {"refund_id": "RF-5001"}
    ledger.begin("k0", "t-1", 1, "send_email", "sha256:c")
    assert ledger.for_thread("t-1") == [
        {"key": "k0", "step": 1, "tool": "send_email", "status": "pending"},
        {"key": "k1", "step": 2, "tool": "refund_charge", "status": "done"},
    ]


@pytest.mark.integration
def test_a_worker_killed_after_the_refund_is_recovered_by_another_on_postgres(
    home: Path, postgres_url: str
) -> None:
    from stores.ledger_postgres import PostgresLedger

    pg = {"KEEL_POSTGRES_URL": postgres_url, **APPROVAL_KEY}
    thread = _json(_keel(home, pg, "run", REFUND_REQUEST))["thread_id"]
    kill = {**pg, "KEEL_FAULTS": json.dumps({"crash_after": ["refund_charge"]})}
    killed = _keel(home, kill, "resume", thread, "--approve")
    assert killed.returncode < 0, killed.stderr  # SIGKILL, after the refund, before its checkpoint

    recovered = _json(_keel(home, pg, "recover", thread))
    assert recovered["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    found = [r for r in recovered["results"] if r["via"] == "intent ledger (found at the backend)"]
    assert len(found) == 1
    intents = PostgresLedger(postgres_url).for_thread(thread)
    assert [(i["tool"], i["status"]) for i in intents] == [
        ("refund_charge", "done"),
        ("send_email", "done"),
    ]
    assert not (home / "intents.sqlite").exists()


@pytest.mark.integration
def test_workers_starting_together_on_a_fresh_database_all_start(
    home: Path, postgres_url: str
) -> None:
    """setup() under a lock: a blocking lock deadlocked here against CREATE INDEX CONCURRENTLY."""
    import threading

    from stores.backends import open_checkpointer
    from stores.ledger_postgres import PostgresLedger

    settings = Settings(home=home, postgres_url=postgres_url, _env_file=None)  # type: ignore[call-arg, arg-type]
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            start.wait()
            with open_checkpointer(settings):
                PostgresLedger(postgres_url).begin(f"k{n}", f"t{n}", 0, "send_email", "d")
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []
    assert len(PostgresLedger(postgres_url).owners()) == 4


@pytest.mark.integration
def test_a_worker_starting_on_a_database_already_set_up_takes_no_lock(
    home: Path, postgres_url: str
) -> None:
    """Everyday starts do no DDL and take no session lock (which a transaction pooler breaks)."""

    import psycopg

    from stores.backends import open_checkpointer
    from stores.checkpoints import _SETUP_LOCK

    settings = Settings(home=home, postgres_url=postgres_url, _env_file=None)  # type: ignore[call-arg, arg-type]
    with open_checkpointer(settings):
        pass  # the first start migrates
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        started = time.monotonic()
        with open_checkpointer(settings) as saver:
            assert (
                saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}) is None
            )
        assert time.monotonic() - started < 10


@pytest.mark.integration
def test_a_chroma_server_that_goes_away_is_named_not_mistaken_for_a_missing_index(
    tmp_path: Path,
) -> None:
    from keel.errors import ConfigError, CorpusMissing
    from keel.servers import chroma_server

    with chroma_server() as server:
        settings = Settings(home=tmp_path, chroma_url=server.url, _env_file=None)  # type: ignore[call-arg]
        store = CorpusStore(settings, embedder_for(settings))
        with pytest.raises(CorpusMissing, match="run `keel ingest` first"):
            store.count()  # up, but nothing ingested: that is what the message says
    with pytest.raises(ConfigError, match=r"KEEL_CHROMA_URL=.*no Chroma server answers"):
        store.count()  # the same client, after the server stopped


@pytest.mark.integration
def test_a_server_store_reopens_a_rebuilt_collection_and_names_a_server_gone(
    tmp_path: Path,
) -> None:
    from keel.errors import ConfigError
    from keel.servers import chroma_server

    with chroma_server() as server:
        settings = Settings(home=tmp_path, chroma_url=server.url, _env_file=None)  # type: ignore[call-arg]
        CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
        store = CorpusStore(settings, embedder_for(settings))
        before = [e.chunk_id for e in store.search("What is our refund window?", 6).evidence]
        # `keel ingest --rebuild` elsewhere: a new collection under the same name, a new id.
        CorpusStore(settings, embedder_for(settings)).ingest(progress=False, rebuild=True)
        after = [e.chunk_id for e in store.search("What is our refund window?", 6).evidence]
        assert after == before
    with pytest.raises(ConfigError, match=r"KEEL_CHROMA_URL=.*no Chroma server answers"):
        store.search("What is our refund window?", 6)  # the kept handle, the server gone


class _Impostor:
    """An embedder that answers with vectors of another size, under a name of its choosing."""

    def __init__(self, name: str, size: int = 8) -> None:
        self.name, self.size = name, size

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0 / self.size] * self.size for _ in texts]


@pytest.mark.integration
def test_a_server_collection_built_with_other_embeddings_is_refused_naming_the_setting(
    server_store: CorpusStore,
) -> None:
    from keel.errors import CorpusMissing

    renamed = CorpusStore(server_store.settings, _Impostor("openai:text-embedding-3-small"))
    with pytest.raises(CorpusMissing, match="KEEL_EMBEDDING_BACKEND"):
        renamed.search("What is our refund window?", 3)
    # The same model name with vectors of another size (a model swapped behind the name).
    resized = CorpusStore(server_store.settings, _Impostor(server_store.embedder.name))
    with pytest.raises(CorpusMissing, match=r"another size.*KEEL_EMBEDDING_MODEL"):
        resized.search("What is our refund window?", 3)
    assert server_store.search("What is our refund window?", 3).evidence  # still intact


# -- a Postgres that goes away mid-run ----------------------------------------------------------


@pytest.mark.integration
def test_a_postgres_that_goes_away_at_an_approval_is_named_and_loses_nothing(
    home: Path, own_postgres: PostgresServer
) -> None:
    """A worker stays up while its database restarts: the resume in between is refused with the
    setting to fix and what to run; once the server is back the same worker finishes the thread."""
    from graph.context import KeelContext
    from keel.app import Decision, KeelApp
    from keel.errors import KeelError

    settings = Settings(
        home=home,
        postgres_url=own_postgres.url(),  # type: ignore[arg-type]
        postgres_connect_timeout_s=2,
        _env_file=None,  # type: ignore[call-arg]
    )
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval"
        thread = waiting.thread_id
        own_postgres.stop("fast")

        started = time.monotonic()
        with pytest.raises(KeelError) as down:
            app.resume(thread, Decision(kind="approve"))
        assert time.monotonic() - started < 15  # the pool gives up after the setting's timeout
        message = str(down.value)
        assert message.startswith(f"KEEL_POSTGRES_URL={own_postgres.url()}: ")
        assert f"keel resume {thread}" in message and f"keel recover {thread}" in message
        assert "PoolTimeout" not in type(down.value).__name__
        assert _side_effects(home) == ([], [])

        own_postgres.start()
        assert app.show(thread).status == "awaiting_approval"  # nothing was lost
        done = app.resume(thread, Decision(kind="approve"))
    assert done.status == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])


def _pending_intents(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM keel_intents WHERE status = 'pending'")
            return int(row.fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0


@pytest.mark.integration
def test_a_postgres_that_goes_away_during_a_refund_is_one_line_and_recovered_exactly_once(
    home: Path, own_postgres: PostgresServer
) -> None:
    """The server stops while the refund is at the bank: the intent is written, the refund is
    made, its settlement cannot be. The CLI says so in one line; `keel recover` finishes it, and
    the backend, asked with the idempotency key, answers with the first refund."""
    pg = {
        "KEEL_POSTGRES_URL": own_postgres.url(),
        "KEEL_POSTGRES_CONNECT_TIMEOUT_S": "2",
        **APPROVAL_KEY,
    }
    thread = _json(_keel(home, pg, "run", REFUND_REQUEST))["thread_id"]

    slow_bank = {
        **pg,
        "KEEL_FAULTS": json.dumps({"latency_s": 4, "integrations": ["billing"]}),
        "KEEL_TOOL_TIMEOUT_S": "30",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **slow_bank)
    resume = subprocess.Popen(
        [KEEL, "resume", thread, "--approve", "--json"], env=env, cwd=home,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while _pending_intents(own_postgres.url()) == 0:  # the refund's intent is written: it is out
        assert resume.poll() is None and time.monotonic() < deadline, resume.communicate()
        time.sleep(0.05)
    own_postgres.stop("fast")
    stdout, stderr = resume.communicate(timeout=120)
    done = subprocess.CompletedProcess(resume.args, resume.returncode, stdout, stderr)
    line = _one_line_error(done, "KEEL_POSTGRES_URL")
    assert f"keel recover {thread}" in line
    assert _side_effects(home) == ([("CH-3002", 49.0)], [])  # the bank acted; nothing else did

    own_postgres.start()
    recovered = _json(_keel(home, pg, "recover", thread))
    assert recovered["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    via = [r["via"] for r in recovered["results"] if r["tool"] == "refund_charge"]
    assert via == ["intent ledger (found at the backend)"]


# -- everything switched, through the CLI only --------------------------------------------------


@pytest.mark.integration
def test_settings_alone_move_a_thread_onto_postgres_and_a_chroma_server(
    home: Path, postgres_url: str, chroma: ChromaServer
) -> None:
    servers = {
        "KEEL_POSTGRES_URL": postgres_url,
        **APPROVAL_KEY,
        "KEEL_CHROMA_URL": chroma.url,
        "KEEL_COLLECTION": f"keel-cli-{uuid.uuid4().hex[:8]}",
    }
    shutil.rmtree(home / "chroma")  # the embedded index is gone: only the server can answer
    assert _json(_keel(home, servers, "ingest"))["added"] == 78
    started = _json(_keel(home, servers, "run", REFUND_REQUEST))
    assert started["status"] == "awaiting_approval"
    assert "runbook-duplicate-charge" in {e["source"] for e in started["evidence"]}
    resumed = _json(_keel(home, servers, "resume", started["thread_id"], "--approve"))
    assert resumed["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert _postgres_threads(postgres_url) == {started["thread_id"]}
    assert not (home / "chroma").exists() and not (home / "checkpoints.sqlite").exists()


@pytest.mark.integration
def test_a_chroma_server_that_goes_away_at_an_approval_loses_no_thread(home: Path) -> None:
    from keel.servers import chroma_server

    with chroma_server() as server:
        servers = {"KEEL_CHROMA_URL": server.url}
        assert _json(_keel(home, servers, "ingest"))["added"] == 78
        started = _json(_keel(home, servers, "run", REFUND_REQUEST))
        assert started["status"] == "awaiting_approval"
    # The server is gone. New requests are refused naming the setting, before any thread...
    refused = _keel(home, servers, "run", "Close ticket T-77 and tell the customer")
    _one_line_error(refused, "KEEL_CHROMA_URL")
    assert _side_effects(home) == ([], [])
    # ...and the thread that was waiting for its approval is still there and finishes: what it
    # retrieved is in its checkpoint, and nothing after the approval reads the index.
    resumed = _json(_keel(home, servers, "resume", started["thread_id"], "--approve"))
    assert resumed["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
