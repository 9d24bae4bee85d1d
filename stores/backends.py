"""Which backend keeps Keel's durable stores: ``open_stores`` is the one place that decides.

SQLite files in ``KEEL_HOME`` by default; PostgreSQL beside the checkpoints when
``KEEL_POSTGRES_URL`` is set (``Settings.backend``), so every worker on every machine reads and
writes the same ledger, guard, inbox, budgets, leases and flight record. Nothing else in Keel
picks an implementation: callers take their stores from ``open_stores`` (or from the ``Stores``
handed down to them, as ``KeelContext`` and ``KeelApp`` do).

Every store is made lazily (no file, connection or pool until its first use), so opening them
all to use one costs a few objects. The Postgres implementations (psycopg) are imported only
when that backend is picked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from keel.settings import Settings
from stores.breakers import SqliteBreakers
from stores.budgets import Budgets, SqliteBudgets
from stores.checkpoints import postgres_checkpointer, sqlite_checkpointer
from stores.flight_record import FlightRecord, SqliteFlightRecord
from stores.guard import Guard, SqliteGuard
from stores.inbox import Inbox, SqliteInbox
from stores.leases import Leases, PostgresLeases, SqliteLeases
from stores.ledger import Ledger, SqliteLedger
from stores.review_log import ReviewLog, StoredReviewLog

Saver = BaseCheckpointSaver[str]


@dataclass(frozen=True)
class Stores:
    """Every durable store of one Keel set-up, on one backend.

    Attributes:
        backend: ``"sqlite"`` or ``"postgres"`` (``Settings.backend``).
        ledger: the intent ledger of irreversible calls (``stores.ledger``).
        guard: the thread guard: receipts consumed, rejections, taint, the requester, waits and
            deliveries, validated plans, the approval history (``stores.guard``).
        inbox: which thread waits for which domain event; the relay's cursor (``stores.inbox``).
        budgets: spend and reservations against the budgets (``stores.budgets``).
        flight_record: every run's events (``stores.flight_record``); made on first write.
        breakers: the circuit breakers of the processes sharing this home: SQLite on either
            backend, read before every call, and a breaker says what this machine reaches
            (docs/persistence-and-scale.md).
        open_checkpointer: opens LangGraph's checkpointer (closed when the block ends).
        open_leases: the runs' leases beside an open checkpointer (``stores.leases``).

    Example:
        >>> from pathlib import Path
        >>> stores = open_stores(Settings(home=Path("/tmp/keel-doc"), _env_file=None))
        >>> stores.backend, type(stores.ledger).__name__, type(stores.flight_record).__name__
        ('sqlite', 'SqliteLedger', 'SqliteFlightRecord')
    """

    backend: Literal["sqlite", "postgres"]
    ledger: Ledger
    guard: Guard
    inbox: Inbox
    budgets: Budgets
    flight_record: FlightRecord
    breakers: SqliteBreakers
    open_checkpointer: Callable[[], AbstractContextManager[Saver]]
    open_leases: Callable[[BaseCheckpointSaver[Any]], Leases]

    @property
    def reviews(self) -> ReviewLog:
        """The threads' approval history, kept in the thread guard's store."""
        return StoredReviewLog(self.guard)

    def close(self) -> None:
        """Let go of what the stores hold open (files, shared pools)."""
        self.ledger.close()
        self.guard.close()
        self.inbox.close()
        self.budgets.close()
        self.flight_record.close()
        self.breakers.close()


def open_stores(settings: Settings) -> Stores:
    """The stores the settings select: the one place that picks SQLite or PostgreSQL.

    Nothing is opened yet: each store connects on its first use, the checkpointer when
    ``open_checkpointer`` is entered.
    """
    if settings.backend == "sqlite":
        return Stores(
            backend="sqlite",
            ledger=SqliteLedger(settings.intent_db),
            guard=SqliteGuard(settings.intent_db),
            inbox=SqliteInbox(settings.events_db),
            budgets=SqliteBudgets(settings.budgets_db),
            flight_record=SqliteFlightRecord(settings.records_db, synchronous=settings.record_sync),
            breakers=SqliteBreakers(settings.breaker_db),
            open_checkpointer=lambda: sqlite_checkpointer(settings),
            open_leases=lambda _saver: SqliteLeases(settings.checkpoint_db, settings.lease_ttl_s),
        )
    return _postgres_stores(settings)


def _postgres_stores(settings: Settings) -> Stores:
    # psycopg (and the Postgres stores) only when configured.
    from stores.budgets_postgres import PostgresBudgets
    from stores.flight_record_postgres import PostgresFlightRecord
    from stores.guard_postgres import PostgresGuard
    from stores.inbox_postgres import PostgresInbox
    from stores.ledger_postgres import PostgresLedger

    secret = settings.postgres_url
    assert secret is not None, "Settings.backend said postgres"
    url = secret.get_secret_value()
    timeout, pooler = settings.postgres_connect_timeout_s, settings.postgres_behind_pooler
    return Stores(
        backend="postgres",
        ledger=PostgresLedger(url, connect_timeout_s=timeout, behind_pooler=pooler),
        guard=PostgresGuard(url, connect_timeout_s=timeout, behind_pooler=pooler),
        inbox=PostgresInbox(url, connect_timeout_s=timeout, behind_pooler=pooler),
        # The process's stores share one pool, as large as the largest any asks for.
        budgets=PostgresBudgets(
            url,
            pool_size=settings.postgres_pool_size,
            connect_timeout_s=timeout,
            behind_pooler=pooler,
        ),
        flight_record=PostgresFlightRecord(url, connect_timeout_s=timeout, behind_pooler=pooler),
        breakers=SqliteBreakers(settings.breaker_db),
        open_checkpointer=lambda: postgres_checkpointer(settings, url),
        open_leases=lambda saver: _postgres_leases(saver, settings.lease_ttl_s),
    )


def _postgres_leases(saver: Any, ttl_s: float) -> Leases:
    """Leases on the checkpointer's own pool (``PostgresSaver.conn``): one outage, one error."""
    return PostgresLeases(saver.conn.connection, ttl_s)


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator[Saver]:
    """The checkpointer the settings select, set up and ready; closed on exit.

    SQLite at ``settings.checkpoint_db`` (WAL, busy timeout) by default; with
    ``settings.postgres_url``, a ``PostgresSaver`` on a connection pool.

    Raises:
        ConfigError: the Postgres database cannot be reached or used (the message names
            ``KEEL_POSTGRES_URL`` and hides the password).

    Later, while the saver is in use, a Postgres that stops answering raises
    ``keel.errors.StoreUnavailable`` (also naming ``KEEL_POSTGRES_URL``) from the saver's calls.

    Example:
        >>> from pathlib import Path
        >>> from graph.builder import build_graph
        >>> with open_checkpointer(Settings(home=Path("/tmp/keel-doc"))) as saver:
        ...     graph = build_graph(saver)
    """
    with open_stores(settings).open_checkpointer() as saver:
        yield saver
