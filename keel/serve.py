"""Keel on an engine: Aegra server processes sharing a Redis queue over one PostgreSQL cluster.

``make serve`` (``python -m keel.serve``) starts, on free loopback ports:

- a throwaway PostgreSQL cluster (:func:`keel.servers.postgres_server`): Aegra's tables, its
  checkpoints and Keel's own stores (``KEEL_POSTGRES_URL``) in one database;
- ``redis-server`` (:func:`keel.servers.redis_server`): Aegra's job queue and its event broker;
- ``chroma run``: the corpus every worker retrieves from (ingested here once);
- one Aegra API process (``WORKER_COUNT=0``: it answers the clients, queues their runs and reaps
  expired leases) and ``--workers`` Aegra worker processes (default 2), each running
  ``--worker-count`` worker loops over the shared queue. Several processes, not one process with
  more loops: worker loops are coroutines on one event loop, so one process gives neither a
  second core nor crash isolation; a process that dies takes only its own runs, which the lease
  reaper re-queues for the others.

Ctrl-C (or SIGTERM) stops everything it started and removes its folders. The scale demo and the
engine's integration test start the same engine through :func:`engine`. A production deployment
runs the same processes against servers of its own (docs/serving.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from graph.domain import load_domain
from keel.errors import ConfigError
from keel.servers import (
    ChromaServer,
    PostgresServer,
    RedisServer,
    chroma_server,
    free_port,
    postgres_server,
    redis_server,
    stop_group,
)
from keel.settings import Settings, parse_api_tokens

REPO = Path(__file__).resolve().parent.parent
AEGRA_CONFIG = REPO / "aegra.json"


@dataclass
class AegraServer:
    """One Aegra process (``uvicorn aegra_api.main:app``, what ``aegra serve`` runs): an HTTP
    server and its worker loops. Started directly, not through ``aegra serve``, so that its pid
    is the server's own and a SIGKILL kills the worker, not a wrapper."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def start(self, env: Mapping[str, str]) -> None:
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "aegra_api.main:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log"],
            env=dict(env), stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO, start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait for ``/health`` to answer 200 (the graph loaded, the database reached)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                raise ConfigError(f"Aegra server {self.name} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"Aegra server {self.name} not ready in {timeout_s:g} s")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: the process dies with its runs mid-flight, as a crashed machine would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process, timeout_s=20.0)
        if self.log is not None:
            self.log.close()
            self.log = None

    def log_tail(self, lines: int = 3) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        """The server's JSON log lines (``ENV_MODE=PRODUCTION``), for who ran which run."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


@dataclass
class Engine:
    """The running engine: the API process clients talk to, the worker processes, the token of
    each client user, the environment they share."""

    postgres: PostgresServer
    redis: RedisServer
    api: AegraServer
    workers: list[AegraServer]
    tokens: dict[str, str]
    env: dict[str, str]
    settings: Settings
    roles: dict[str, str] = field(default_factory=dict)
    """Each user's roles as KEEL_API_TOKENS writes them (``requester+reviewer``)."""
    chroma: ChromaServer | None = None
    """The corpus server (its pid, for the engine bench's CPU per process)."""

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def keel_postgres_url(self) -> str:
        return self.postgres.url()

    def client(self, user: str, *, api_key: bool = False) -> Any:
        """A LangGraph SDK sync client for ``user`` on the API process: its token as
        ``Authorization: Bearer`` or, with ``api_key``, as the SDK's ``api_key`` (``X-Api-Key``,
        what Agent Chat UI sends)."""
        from langgraph_sdk import get_sync_client

        if api_key:
            return get_sync_client(url=self.api.url, api_key=self.tokens[user])
        # api_key=None: no key from the environment (LANGSMITH_API_KEY) beside the bearer token.
        return get_sync_client(
            url=self.api.url,
            api_key=None,
            headers={"Authorization": f"Bearer {self.tokens[user]}"},
        )

    def restart(self, index: int) -> AegraServer:
        """Start a new worker process in place of worker ``index`` (what a supervisor does)."""
        old = self.workers[index]
        old.stop()
        new = AegraServer(f"{old.name}'", free_port(), old.log_path.with_suffix(".restarted.log"))
        new.start(self.env)
        new.wait_ready()
        self.workers[index] = new
        return new

    def processes(self) -> list[AegraServer]:
        return [self.api, *self.workers]

    def stop(self) -> None:
        """Stop the workers, then the API process (the servers are stopped by their owners)."""
        for server in reversed(self.processes()):
            server.stop()


def engine_env(
    postgres: PostgresServer,
    redis: RedisServer,
    home: Path,
    tokens: Mapping[str, str],
    *,
    worker_count: int,
    roles: Mapping[str, str] | None = None,
    lease_s: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every Aegra process of one deployment shares.

    ``lease_s`` shortens Aegra's lease (heartbeat a third of it, the reaper as often) so a killed
    worker's runs are re-run within seconds; production keeps Aegra's 30 s (a lease shorter than
    a worker's worst stall would hand a live run to a second worker).
    """
    owned = ("KEEL_", "AEGRA_", "REDIS_", "DATABASE_URL", "WORKER_")
    source = base if base is not None else os.environ
    env = {k: v for k, v in source.items() if not k.startswith(owned)}
    env.update(
        AEGRA_CONFIG=str(AEGRA_CONFIG),
        DATABASE_URL=postgres.url(),
        REDIS_BROKER_ENABLED="true",
        REDIS_URL=redis.url,
        WORKER_COUNT=str(worker_count),
        ENV_MODE="PRODUCTION",  # JSON logs: which worker picked up and finished which run
        LOG_LEVEL="INFO",
        CRON_ENABLED="false",
        KEEL_HOME=str(home),
        KEEL_POSTGRES_URL=postgres.url(),
        KEEL_API_TOKENS=api_tokens(tokens, roles or {}),
        LANGSMITH_TRACING="false",
        # Aegra builds its checkpointer with LangGraph's default serializer and ignores
        # aegra.json's checkpointer.serde: strict from the environment, and Keel's served
        # graph adds its allow-list (graph.served.ServedGraph).
        LANGGRAPH_STRICT_MSGPACK="true",
    )
    if lease_s is not None:
        beat = max(1, lease_s // 3)
        env.update(
            LEASE_DURATION_SECONDS=str(lease_s),
            HEARTBEAT_INTERVAL_SECONDS=str(beat),
            REAPER_INTERVAL_SECONDS=str(beat),
            # A queued run a dying worker's connection swallowed (popped, never started) is
            # pending and not in the queue: the reaper re-queues it after this long (Aegra: 120 s).
            STUCK_PENDING_THRESHOLD_SECONDS=str(max(10, 3 * lease_s)),
        )
    return env


def api_tokens(tokens: Mapping[str, str], roles: Mapping[str, str]) -> str:
    """The ``KEEL_API_TOKENS`` value for {user: token} and {user: roles}.

    Example:
        >>> api_tokens({"alice": "t0ken-a1", "olga": "t0ken-o1"}, {"olga": "operator"})
        'alice=t0ken-a1,olga=t0ken-o1:operator'
    """
    return ",".join(
        f"{user}={token}:{roles[user]}" if roles.get(user) else f"{user}={token}"
        for user, token in tokens.items()
    )


def user_roles(users: Sequence[str]) -> dict[str, str]:
    """``["alice:requester", "rita"]`` as {user: roles} ("" for a user with the default roles).

    Raises:
        ConfigError: a user or a role is malformed (the same check as KEEL_API_TOKENS).
    """
    out = {}
    for entry in users:
        user, _, roles = entry.partition(":")
        out[user] = roles
    check_api_tokens(api_tokens({u: f"placeholder-{i}" for i, u in enumerate(out)}, out))
    return out


def check_api_tokens(value: str) -> None:
    """Refuse a malformed KEEL_API_TOKENS before any process starts, in one line naming it.

    Raises:
        ConfigError: the value is malformed.
    """
    try:
        parse_api_tokens(value)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def prepare_home(home: Path, postgres_url: str, chroma_url: str, approval_key: str) -> Settings:
    """The corpus in the Chroma server and the domain's backend (``KEEL_DOMAIN``, loaded as the
    CLI loads it), made once before any worker starts; the settings every process shares, the
    approval key among them (a secret setting, KEEL_APPROVAL_KEY: with PostgreSQL, Keel refuses
    to start without it).
    """
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    settings = Settings(
        home=home,
        postgres_url=postgres_url,  # type: ignore[arg-type]
        chroma_url=chroma_url,
        approval_key=approval_key,  # type: ignore[arg-type]
        _env_file=None,  # type: ignore[call-arg]
    )
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    load_domain(settings.domain).prepare(settings, reset=True)
    return settings


@contextlib.contextmanager
def engine(
    *,
    workers: int = 2,
    worker_count: int = 2,
    users: Sequence[str] = ("agent:requester", "reviewer:reviewer"),
    lease_s: int | None = None,
    home: Path | None = None,
    durable: bool = True,
    extra_env: Mapping[str, str] | None = None,
    say: Any = None,
) -> Iterator[Engine]:
    """Start PostgreSQL, Redis, Chroma, one API process and ``workers`` worker processes; stop
    everything on exit.

    The API process (``WORKER_COUNT=0``) answers the clients and runs the lease reaper; each
    worker process runs ``worker_count`` worker loops on the shared queue (and answers HTTP too,
    unused here). Killing a worker cuts no client's connection, as behind a load balancer that
    sends clients only to API processes. Each user in ``users`` gets a fresh random token. The
    API process is ready (migrations and checkpoint tables made) before the workers start, so no
    two processes run ``setup()`` on a fresh database at once.
    """
    if workers < 1 or worker_count < 1:
        raise ConfigError("the engine needs at least one worker process with one worker loop")
    roles = user_roles(users)
    if extra_env and "KEEL_API_TOKENS" in extra_env:
        check_api_tokens(extra_env["KEEL_API_TOKENS"])  # before any server starts
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-engine-")))
        pg = stack.enter_context(postgres_server(durable=durable))
        redis = stack.enter_context(redis_server())
        chroma = stack.enter_context(chroma_server())
        home = home or root / "home"
        approval_key = secrets.token_hex(32)
        settings = prepare_home(home, pg.url(), chroma.url, approval_key)
        tokens = {user: secrets.token_hex(24) for user in roles}
        env = engine_env(
            pg, redis, home, tokens, worker_count=worker_count, lease_s=lease_s, roles=roles
        )
        # The workers serve the domain prepared here (engine_env leaves out the caller's KEEL_*).
        env.update(KEEL_DOMAIN=settings.domain, KEEL_CHROMA_URL=chroma.url,
                   KEEL_APPROVAL_KEY=approval_key)  # fmt: skip
        env.update(extra_env or {})
        api = AegraServer("api", free_port(), root / "aegra-api.log")
        running = Engine(pg, redis, api, [], tokens, env, settings, roles=roles, chroma=chroma)
        stack.callback(running.stop)
        api.start({**env, "WORKER_COUNT": "0"})
        api.wait_ready()
        for i in range(workers):
            worker = AegraServer(f"worker{i + 1}", free_port(), root / f"aegra-worker{i + 1}.log")
            worker.start(env)
            running.workers.append(worker)
        for worker in running.workers:
            worker.wait_ready()
        if say is not None:
            names = ", ".join(f"{s.name} (pid {s.pid})" for s in running.workers)
            say(f"PostgreSQL 127.0.0.1:{pg.port}, Redis 127.0.0.1:{redis.port}, Chroma "
                f"{chroma.url}; Aegra API {api.url} (pid {api.pid}), workers {names}")  # fmt: skip
        yield running


SERVE_USERS = ("alice:requester", "rita:reviewer", "olga:operator")
"""``make serve``'s users: one per role (docs/serving.md, "Who may do what")."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keel.serve", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--worker-count", type=int, default=2, help="worker loops per process")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # Ctrl-C stops everything even when started from a shell that ignores SIGINT for background
    # jobs (the ignore is inherited, and Python would keep it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with engine(
            workers=args.workers, worker_count=args.worker_count, users=SERVE_USERS, say=say
        ) as running:
            say(f"Keel's home: {running.home}; KEEL_POSTGRES_URL={running.keel_postgres_url}")
            for user, token in running.tokens.items():
                roles = running.roles.get(user) or "requester+reviewer"
                say(f"token for {user!r} ({roles}): {token}")
            say("graph 'keel'; send a token as `Authorization: Bearer TOKEN` or `X-Api-Key: "
                "TOKEN`, e.g. get_sync_client(url=..., api_key=TOKEN). Who may do what: "
                "docs/serving.md. Ctrl-C stops everything.")  # fmt: skip
            while all(
                s.process is not None and s.process.poll() is None for s in running.processes()
            ):
                time.sleep(1)
            dead = [
                s.name for s in running.processes() if s.process and s.process.poll() is not None
            ]
            say(f"serve: server(s) {dead} exited; stopping")
            return 1
    except ConfigError as err:
        print(f"serve: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("serve: stopped; its servers and folders are removed")
        return 0


if __name__ == "__main__":
    sys.exit(main())
