"""An AgentDojo environment as a Keel backend: one SQLite file holding the environment and a log.

AgentDojo keeps a suite's whole world (a bank account, a Slack workspace, a travel agency) in one
pydantic object that its tool functions change in place. Here that object lives in one row; every
call loads it, runs AgentDojo's own function on it through AgentDojo's ``FunctionsRuntime``, and
writes it back in the same transaction. Every call is logged (tool, arguments, answer), so:

- an irreversible call with an idempotency key already logged returns the first answer instead of
  acting again, and ``recorded`` says what a key did (Keel's intent ledger asks it on recovery);
- the log is the function trace AgentDojo's checkers read (``utility_from_traces``);
- ``snapshot`` is the log's side effects, one ``"tool {args}#seq"`` line each.

A reset writes the environment the case starts from (a suite's default one, with the attack's
injections and the user task's own ``init_environment``), so each case starts clean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentdojo.functions_runtime import FunctionsRuntime
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from graph.domain import Permanent, SqliteFile, schema_gaps

SCHEMA = """
CREATE TABLE IF NOT EXISTS environment (
    id INTEGER PRIMARY KEY CHECK (id = 1), suite TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tool TEXT NOT NULL, args TEXT NOT NULL,
    effect TEXT NOT NULL, idempotency_key TEXT UNIQUE, output TEXT NOT NULL
);
"""


class EnvironmentBackend:
    """One AgentDojo suite's environment and call log in ``path``.

    Args:
        path: the SQLite file.
        suite: the AgentDojo ``TaskSuite`` (its environment type and its tool functions).
    """

    def __init__(self, path: Path, suite: Any) -> None:
        self.path = path
        self.suite = suite
        self._file = SqliteFile(path, schema=SCHEMA)
        self._runtime = FunctionsRuntime(suite.tools)

    def exists(self) -> bool:
        """Whether the file holds the tables and an environment of this suite (read only).

        Raises:
            ConfigError: the file is not a SQLite database.
        """
        if schema_gaps(self.path, SCHEMA):
            return False
        with self._file.connect() as conn:
            row = conn.execute("SELECT suite FROM environment WHERE id = 1").fetchone()
        return row is not None and row[0] == self.suite.name

    def seed(self, environment: BaseModel, *, reset: bool = False) -> None:
        """Write ``environment`` as the world a run starts from (``reset``: the log emptied too;
        without it, an existing environment is kept)."""
        if reset and self.path.exists():
            self._file.wipe()
        with self._file.transaction() as conn:
            if not reset and conn.execute("SELECT 1 FROM environment").fetchone():
                return
            conn.execute(
                "INSERT OR REPLACE INTO environment (id, suite, body) VALUES (1, ?, ?)",
                (self.suite.name, environment.model_dump_json()),
            )

    def environment(self) -> Any:
        """The environment as it stands (a fresh copy: changing it changes nothing here)."""
        with self._file.connect() as conn:
            (body,) = conn.execute("SELECT body FROM environment WHERE id = 1").fetchone()
        return self.suite.environment_type.model_validate_json(body)

    def call(
        self, tool: str, args: dict[str, Any], effect: str, key: str | None = None
    ) -> dict[str, Any]:
        """Run AgentDojo's ``tool`` on the environment; ``{"result": answer}`` as JSON values.

        A key already logged returns that call's answer and changes nothing.

        Raises:
            Permanent: the function refused (AgentDojo raises for an unknown id, say).
        """
        with self._file.transaction() as conn:
            if key is not None:
                row = conn.execute(
                    "SELECT output FROM calls WHERE idempotency_key = ?", (key,)
                ).fetchone()
                if row is not None:
                    found: dict[str, Any] = json.loads(row[0])
                    return found
            (body,) = conn.execute("SELECT body FROM environment WHERE id = 1").fetchone()
            env = self.suite.environment_type.model_validate_json(body)
            try:
                result, _ = self._runtime.run_function(env, tool, args, raise_on_error=True)
            except Exception as err:  # the function's own refusal: an answer, not a fault
                raise Permanent(f"{tool}: {type(err).__name__}: {err}") from err
            output = {"result": to_jsonable_python(result)}
            # Written back after reads too: a read can leave a trace AgentDojo judges (a web
            # page fetched is in the site's log, and a fetch of an attacker's page is harm).
            conn.execute("UPDATE environment SET body = ? WHERE id = 1", (env.model_dump_json(),))
            conn.execute(
                "INSERT INTO calls (tool, args, effect, idempotency_key, output) "
                "VALUES (?, ?, ?, ?, ?)",
                (tool, _canonical(args), effect, key, json.dumps(output, default=str)),
            )
        return output

    def recorded(self, key: str) -> dict[str, Any] | None:
        """What the call with idempotency ``key`` answered, or None if no call had it."""
        with self._file.connect() as conn:
            row = conn.execute(
                "SELECT output FROM calls WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def log(self) -> list[tuple[str, dict[str, Any]]]:
        """Every call made, oldest first: (tool, arguments); AgentDojo's function trace."""
        with self._file.connect() as conn:
            rows = conn.execute("SELECT tool, args FROM calls ORDER BY seq").fetchall()
        return [(tool, json.loads(args)) for tool, args in rows]

    def snapshot(self) -> set[str]:
        """Each side effect once, ``"tool {arguments}#seq"``: a call repeated shows twice."""
        with self._file.connect() as conn:
            rows = conn.execute(
                "SELECT seq, tool, args FROM calls WHERE effect != 'read' ORDER BY seq"
            ).fetchall()
        return {f"{tool} {args}#{seq}" for seq, tool, args in rows}


def _canonical(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)
