"""The IT-operations systems of record: services, deploys, metrics, alerts, incidents, on-call
and a pager, in one SQLite file.

Like the support desk's backend it behaves like the real APIs it stands in for where that matters
to Keel: every irreversible call (a rollback, a restart, a page) takes an idempotency key, and the
same key returns the first result instead of acting again; ``recorded`` answers what a key did.
A rollback is not instant: it is ``rolling_back`` until the deploy system finishes it and says so
in its outbox (``rollback.finished``, with ``alert.resolved`` for the alert it cleared).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graph.domain import Permanent, SqliteFile, schema_gaps

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY, team TEXT NOT NULL, tier INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oncall (
    service TEXT PRIMARY KEY REFERENCES services(name), engineer TEXT NOT NULL,
    handle TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deploys (
    id TEXT PRIMARY KEY, service TEXT NOT NULL REFERENCES services(name), version TEXT NOT NULL,
    previous_version TEXT NOT NULL, deployed_at TEXT NOT NULL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    service TEXT NOT NULL REFERENCES services(name), name TEXT NOT NULL, value REAL NOT NULL,
    baseline REAL NOT NULL, PRIMARY KEY (service, name)
);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, service TEXT NOT NULL REFERENCES services(name), title TEXT NOT NULL,
    severity TEXT NOT NULL, status TEXT NOT NULL, opened_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, alert_id TEXT NOT NULL UNIQUE REFERENCES alerts(id),
    service TEXT NOT NULL, title TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '[]', opened_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollbacks (
    id TEXT PRIMARY KEY, deploy_id TEXT NOT NULL REFERENCES deploys(id), reason TEXT NOT NULL,
    status TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS restarts (
    id TEXT PRIMARY KEY, service TEXT NOT NULL REFERENCES services(name), reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    id TEXT PRIMARY KEY, service TEXT NOT NULL, engineer TEXT NOT NULL, message TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, key TEXT NOT NULL,
    payload TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, operation TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL
);
"""

SEED_SERVICES = [
    ("checkout-api", "payments-team", 1),
    ("search-api", "discovery-team", 2),
    ("auth-api", "identity-team", 1),
    ("payments-api", "payments-team", 1),
]
SEED_ONCALL = [
    ("checkout-api", "Lin Wei", "@lin"),
    ("search-api", "Sam Okafor", "@sam"),
    ("auth-api", "Priya Nair", "@priya"),
    ("payments-api", "Jonas Berg", "@jonas"),
]
SEED_DEPLOYS = [
    ("D-4101", "checkout-api", "v2.13.0", "v2.12.4", "2026-11-30T09:00:00+00:00", "superseded"),
    ("D-4102", "checkout-api", "v2.14.0", "v2.13.0", "2026-12-01T14:05:00+00:00", "live"),
    ("D-4201", "search-api", "v5.2.1", "v5.2.0", "2026-11-28T10:30:00+00:00", "live"),
    ("D-4301", "auth-api", "v1.9.0", "v1.8.7", "2026-11-20T08:15:00+00:00", "live"),
    ("D-4401", "payments-api", "v3.0.2", "v3.0.1", "2026-11-25T16:40:00+00:00", "live"),
]
SEED_METRICS = [
    ("checkout-api", "error_rate", 0.084, 0.004),
    ("checkout-api", "p95_latency_ms", 1840.0, 310.0),
    ("search-api", "memory_mb", 7650.0, 2100.0),
    ("search-api", "error_rate", 0.006, 0.005),
    ("auth-api", "error_rate", 0.031, 0.002),
    ("payments-api", "error_rate", 0.001, 0.001),
]
SEED_ALERTS = [
    ("ALR-101", "checkout-api", "Checkout error rate above 5 % since the 14:05 deploy", "sev2",
     "firing", "2026-12-01T14:12:00+00:00"),
    ("ALR-102", "search-api", "search-api memory climbing, pods near their limit", "sev3",
     "firing", "2026-12-01T15:40:00+00:00"),
    ("ALR-103", "auth-api", "auth-api login failures above 3 %", "sev1",
     "firing", "2026-12-01T16:02:00+00:00"),
    ("ALR-104", "payments-api", "payments-api certificate expires in 14 days", "sev4",
     "resolved", "2026-11-29T07:00:00+00:00"),
]  # fmt: skip
SEED_INCIDENTS = [
    ("INC-900", "ALR-104", "payments-api", "Certificate renewal for payments-api", "sev4",
     "closed", '["renewed by the rota"]', "2026-11-29T07:05:00+00:00"),
]  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class IncidentBackend:
    """The operations systems behind the tools. One short transaction per call, safe across
    processes (the worker that is killed and the one that recovers share this file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, rows="row")

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._file.transaction()

    # -- set-up ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the file holds every table and column of the schema and the seed data: a
        file left empty or half-written by a failed first run is not a backend a run can use
        (``seed`` repairs it). The file is only read, never created.

        Raises:
            ConfigError: the file is not a SQLite database.
        """
        if schema_gaps(self.path, SCHEMA):
            return False
        with self._file.connect() as conn:
            return conn.execute("SELECT 1 FROM services LIMIT 1").fetchone() is not None

    def seed(self, *, reset: bool = False) -> None:
        """Create the schema and the deterministic seed data (``reset`` starts from nothing).

        A reset drops the tables rather than the file, so a process that holds the file open
        sees the new data, not a deleted file.
        """
        if reset and self.path.exists():
            self._file.wipe()
        with self._file.connect() as conn:
            conn.executescript(SCHEMA)
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO services VALUES (?,?,?)", SEED_SERVICES)
            conn.executemany("INSERT OR IGNORE INTO oncall VALUES (?,?,?)", SEED_ONCALL)
            conn.executemany("INSERT OR IGNORE INTO deploys VALUES (?,?,?,?,?,?)", SEED_DEPLOYS)
            conn.executemany("INSERT OR IGNORE INTO metrics VALUES (?,?,?,?)", SEED_METRICS)
            conn.executemany("INSERT OR IGNORE INTO alerts VALUES (?,?,?,?,?,?)", SEED_ALERTS)
            conn.executemany(
                "INSERT OR IGNORE INTO incidents VALUES (?,?,?,?,?,?,?,?)", SEED_INCIDENTS
            )

    # -- reads ----------------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            raise Permanent(f"no alert {alert_id}")
        return {"alert_id": row["id"], "service": row["service"], "title": row["title"],
                "severity": row["severity"], "status": row["status"],
                "opened_at": row["opened_at"]}  # fmt: skip

    def list_deploys(self, service: str) -> dict[str, Any]:
        with self._tx() as conn:
            known = conn.execute("SELECT 1 FROM services WHERE name = ?", (service,)).fetchone()
            rows = conn.execute(
                "SELECT * FROM deploys WHERE service = ? ORDER BY deployed_at DESC", (service,)
            ).fetchall()
        if known is None:
            raise Permanent(f"no service {service}")
        return {"service": service, "deploys": [_deploy(r) for r in rows]}

    def get_deploy(self, deploy_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
        if row is None:
            raise Permanent(f"no deploy {deploy_id}")
        return _deploy(row)

    def get_metrics(self, service: str) -> dict[str, Any]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM metrics WHERE service = ? ORDER BY name", (service,)
            ).fetchall()
        if not rows:
            raise Permanent(f"no metrics for service {service}")
        return {"service": service,
                "metrics": [{"name": r["name"], "value": r["value"], "baseline": r["baseline"]}
                            for r in rows]}  # fmt: skip

    def get_oncall(self, service: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM oncall WHERE service = ?", (service,)).fetchone()
        if row is None:
            raise Permanent(f"no on-call rota for service {service}")
        return {"service": row["service"], "engineer": row["engineer"], "handle": row["handle"]}

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise Permanent(f"no incident {incident_id}")
        return _incident(row)

    def incidents(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM incidents ORDER BY id").fetchall()
        return [_incident(r) for r in rows]

    def actions(self) -> dict[str, list[dict[str, Any]]]:
        """Every irreversible action taken, by kind (for the demo's summary and for judging)."""
        with self._tx() as conn:
            return {
                table: [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
                for table in ("rollbacks", "restarts", "pages")
            }

    def snapshot(self) -> set[str]:
        """Every fact a write or irreversible call can change, one line each (for judging)."""
        done = self.actions()
        with self._tx() as conn:
            deploys = conn.execute("SELECT id, status FROM deploys").fetchall()
            alerts = conn.execute("SELECT id, status FROM alerts").fetchall()
        return (
            {f"rollback of {r['deploy_id']}#{r['id']}" for r in done["rollbacks"]}
            | {f"restart of {r['service']}#{r['id']}" for r in done["restarts"]}
            | {f"page to {r['engineer']} for {r['service']}#{r['id']}" for r in done["pages"]}
            | {f"incident for {i['alert_id']} is {i['status']}" for i in self.incidents()}
            | {f"deploy {d['id']} is {d['status']}" for d in deploys}
            | {f"alert {a['id']} is {a['status']}" for a in alerts}
        )

    # -- writes ---------------------------------------------------------------------------------

    def open_incident(self, alert_id: str, title: str) -> dict[str, Any]:
        """Open the incident of an alert; an alert has at most one, so opening it again answers
        the one already open (a retried write changes nothing)."""
        with self._tx() as conn:
            alert = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if alert is None:
                raise Permanent(f"no alert {alert_id}")
            row = conn.execute("SELECT * FROM incidents WHERE alert_id = ?", (alert_id,)).fetchone()
            if row is None:
                count = conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]
                conn.execute(
                    "INSERT INTO incidents (id, alert_id, service, title, severity, status,"
                    " opened_at) VALUES (?,?,?,?,?,?,?)",
                    (f"INC-{900 + count}", alert_id, alert["service"], title, alert["severity"],
                     "open", _now()),
                )  # fmt: skip
                row = conn.execute(
                    "SELECT * FROM incidents WHERE alert_id = ?", (alert_id,)
                ).fetchone()
        return _incident(row)

    def annotate_incident(self, incident_id: str, note: str) -> dict[str, Any]:
        """Add a note to an incident's timeline; the same note twice is kept once."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise Permanent(f"no incident {incident_id}")
            notes = json.loads(row["notes"])
            if note not in notes:
                notes.append(note)
                conn.execute(
                    "UPDATE incidents SET notes = ? WHERE id = ?", (json.dumps(notes), incident_id)
                )
        return {"incident_id": incident_id, "notes": notes}

    # -- irreversible, idempotent ---------------------------------------------------------------

    def _replay(
        self, conn: sqlite3.Connection, key: str, operation: str, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        row = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row["operation"] != operation or json.loads(row["request"]) != request:
            raise Permanent(f"idempotency key {key} was used for a different request")
        return {**json.loads(row["response"]), "replayed": True}

    def _remember(
        self, conn: sqlite3.Connection, key: str, operation: str, request: dict[str, Any],
        response: dict[str, Any],
    ) -> None:  # fmt: skip
        conn.execute(
            "INSERT INTO idempotency VALUES (?,?,?,?)",
            (key, operation, json.dumps(request, sort_keys=True), json.dumps(response)),
        )

    def recorded(self, idempotency_key: str) -> dict[str, Any] | None:
        """What the call with this key did, if it happened."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT response FROM idempotency WHERE key = ?", (idempotency_key,)
            ).fetchone()
        return {**json.loads(row["response"]), "replayed": True} if row else None

    def rollback_deploy(self, deploy_id: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        """Start rolling a live deploy back to the version before it; it finishes later."""
        request = {"deploy_id": deploy_id, "reason": reason}
        with self._tx() as conn:
            if (earlier := self._replay(conn, idempotency_key, "rollback", request)) is not None:
                return earlier
            deploy = conn.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            if deploy is None:
                raise Permanent(f"refused: no deploy {deploy_id}")
            if deploy["status"] != "live":
                raise Permanent(f"refused: deploy {deploy_id} is {deploy['status']}, not live")
            count = conn.execute("SELECT COUNT(*) FROM rollbacks").fetchone()[0]
            rollback_id = f"RB-{601 + count}"
            conn.execute(
                "INSERT INTO rollbacks VALUES (?,?,?,?,?,?)",
                (rollback_id, deploy_id, reason, "rolling_back", idempotency_key, _now()),
            )
            conn.execute("UPDATE deploys SET status = 'rolling_back' WHERE id = ?", (deploy_id,))
            response = {"rollback_id": rollback_id, "deploy_id": deploy_id,
                        "service": deploy["service"], "to_version": deploy["previous_version"],
                        "status": "rolling_back", "replayed": False}  # fmt: skip
            self._remember(conn, idempotency_key, "rollback", request, response)
            return response

    def restart_service(self, service: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        request = {"service": service, "reason": reason}
        with self._tx() as conn:
            if (earlier := self._replay(conn, idempotency_key, "restart", request)) is not None:
                return earlier
            if conn.execute("SELECT 1 FROM services WHERE name = ?", (service,)).fetchone() is None:
                raise Permanent(f"refused: no service {service}")
            count = conn.execute("SELECT COUNT(*) FROM restarts").fetchone()[0]
            restart_id = f"RS-{701 + count}"
            conn.execute(
                "INSERT INTO restarts VALUES (?,?,?,?,?)",
                (restart_id, service, reason, idempotency_key, _now()),
            )
            response = {"restart_id": restart_id, "service": service, "status": "restarted",
                        "replayed": False}  # fmt: skip
            self._remember(conn, idempotency_key, "restart", request, response)
            return response

    def page_oncall(
        self, service: str, engineer: str, message: str, idempotency_key: str
    ) -> dict[str, Any]:
        request = {"service": service, "engineer": engineer, "message": message}
        with self._tx() as conn:
            if (earlier := self._replay(conn, idempotency_key, "page", request)) is not None:
                return earlier
            count = conn.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
            page_id = f"PG-{801 + count}"
            conn.execute(
                "INSERT INTO pages VALUES (?,?,?,?,?,?)",
                (page_id, service, engineer, message, idempotency_key, _now()),
            )
            response = {"page_id": page_id, "service": service, "engineer": engineer,
                        "status": "paged", "replayed": False}  # fmt: skip
            self._remember(conn, idempotency_key, "page", request, response)
            return response

    # -- the deploy system's side: rollbacks finish, and say so -------------------------------

    def finish_rollbacks(self) -> list[str]:
        """Finish every rollback in flight: the deploy goes back a version and the alert of its
        service resolves, each announced in the outbox in the same transaction."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT r.id, r.deploy_id, d.service, d.previous_version FROM rollbacks r"
                " JOIN deploys d ON d.id = r.deploy_id WHERE r.status = 'rolling_back'"
            ).fetchall()
            for r in rows:
                conn.execute("UPDATE rollbacks SET status = 'finished' WHERE id = ?", (r["id"],))
                conn.execute(
                    "UPDATE deploys SET status = 'rolled_back' WHERE id = ?", (r["deploy_id"],)
                )
                payload = {"rollback_id": r["id"], "deploy_id": r["deploy_id"],
                           "service": r["service"], "version": r["previous_version"],
                           "status": "finished"}  # fmt: skip
                _announce(conn, "rollback.finished", r["id"], payload)
                alerts = conn.execute(
                    "SELECT id FROM alerts WHERE service = ? AND status = 'firing'", (r["service"],)
                ).fetchall()
                for a in alerts:
                    conn.execute("UPDATE alerts SET status = 'resolved' WHERE id = ?", (a["id"],))
                    _announce(conn, "alert.resolved", a["id"],
                              {"alert_id": a["id"], "service": r["service"]})  # fmt: skip
        return [r["id"] for r in rows]

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        """Business events newer than ``seq``, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [
            {"seq": r["seq"], "type": r["type"], "key": r["key"],
             "payload": json.loads(r["payload"]), "created_at": r["created_at"]}
            for r in rows
        ]  # fmt: skip


def _announce(conn: sqlite3.Connection, kind: str, key: str, payload: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO events (type, key, payload, created_at) VALUES (?,?,?,?)",
        (kind, key, json.dumps(payload), _now()),
    )


def _deploy(row: sqlite3.Row) -> dict[str, Any]:
    return {"deploy_id": row["id"], "service": row["service"], "version": row["version"],
            "previous_version": row["previous_version"], "deployed_at": row["deployed_at"],
            "status": row["status"]}  # fmt: skip


def _incident(row: sqlite3.Row) -> dict[str, Any]:
    return {"incident_id": row["id"], "alert_id": row["alert_id"], "service": row["service"],
            "title": row["title"], "severity": row["severity"], "status": row["status"],
            "notes": json.loads(row["notes"])}  # fmt: skip
