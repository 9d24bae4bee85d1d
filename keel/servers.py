"""Throwaway local servers for ``make serve`` (:mod:`keel.serve`), the scale demo, the benches
and the integration tests.

A PostgreSQL cluster (``initdb`` + ``pg_ctl``), a Redis server (``redis-server``, no persistence)
and a Chroma server (``chroma run``), each on a free loopback port with its data in a temporary
directory, stopped and removed on exit. Production runs point ``KEEL_POSTGRES_URL``,
``REDIS_URL`` and ``KEEL_CHROMA_URL`` at servers of their own instead.

"On exit" includes an interrupted run: Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` and, while a
server is up, SIGTERM (what a CI timeout sends) raises :class:`Terminated`, a ``KeyboardInterrupt``
too (pytest then stops and tears its fixtures down), so the ``with`` blocks stop their servers and
remove their folders instead of the process vanishing and leaving them behind. A cluster runs in
its own session (``pg_ctl`` detaches it), Redis and Chroma in their own process groups, so a
signal to the terminal's group reaches none of them before its orderly stop. Only SIGKILL leaves
them behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from keel.errors import ConfigError

POSTGRES_HINT = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make postgres` "
    "(Debian/Ubuntu: apt-get install postgresql) or put their folder on PATH"
)
REDIS_HINT = (
    "redis-server is not installed: run `make redis` (Debian/Ubuntu: apt-get install "
    "redis-server) or put it on PATH"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread so ``with`` blocks and ``finally`` clauses run
    (a ``KeyboardInterrupt`` so that pytest, like a user's Ctrl-C, stops and tears down)."""


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` instead of ending the process
    at once. A no-op off the main thread or when the program has its own SIGTERM handler.

    Example:
        >>> with terminate_gracefully(), postgres_server() as pg:  # doctest: +SKIP
        ...     serve(pg)  # a `kill PID` now stops and removes the cluster
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_passing_interrupts(
    argv: list[str], *, timeout: float, grace_s: float = 120.0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True)`` for a child that starts servers.

    ``subprocess.run`` answers an interruption (or its timeout) with SIGKILL, which leaves the
    child's servers and folders behind; here the child gets SIGTERM and ``grace_s`` to stop them
    (it uses this module's servers, so SIGTERM is an orderly exit for it), then SIGKILL.
    """
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=grace_s)
            except BaseException:
                process.kill()
                raise
            raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, or Debian's versioned folder."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster: ``url(db)`` names a database on it (trust auth, loopback only).

    ``stop()`` and ``start()`` take the same cluster down and up again on the same data folder and
    port, for tests of a database that goes away mid-run.
    """

    port: int
    user: str
    data_dir: Path
    pg_ctl: tuple[str, ...] = field(default=(), repr=False)
    options: str = field(default="", repr=False)
    log: Path | None = field(default=None, repr=False)

    def url(self, database: str = "keel") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the cluster (``fast``: sessions are cut off, the data is flushed cleanly)."""
        _pg_ctl(*self.pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def start(self) -> None:
        """Start the cluster again, on the same data folder and port."""
        assert self.log is not None
        _pg_ctl(*self.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log), "-w", "-t", "60",
                "-o", self.options, "start")  # fmt: skip


def _pg_ctl(*argv: str) -> None:
    """Run a server program (as the cluster's owner); a failure is a ConfigError."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir()
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        program = next((Path(a).name for a in argv if "/" in a), argv[0])
        raise ConfigError(f"PostgreSQL: {program} failed: {' '.join(tail)}")


@contextlib.contextmanager
def postgres_server(*, durable: bool = True, user: str = "keel") -> Iterator[PostgresServer]:
    """Start a PostgreSQL cluster in a temporary directory; stop and remove it on exit.

    PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` system user
    (Debian's package creates it). ``durable=False`` turns fsync off, for tests only.

    Stopped and removed on an interrupted run too (SIGINT, SIGTERM: see the module's docstring).

    Raises:
        ConfigError: the server programs are missing or the cluster does not start.
    """
    with terminate_gracefully():
        yield from _postgres_server(durable=durable, user=user)


def _postgres_server(*, durable: bool, user: str) -> Iterator[PostgresServer]:
    bindir = postgres_bin()
    if bindir is None:
        raise ConfigError(POSTGRES_HINT)
    root = Path(tempfile.mkdtemp(prefix="keel-pg-"))
    data, sockets, log = root / "data", root / "run", root / "postgres.log"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    server = PostgresServer(
        port=port, user=user, data_dir=data, options=options, log=log,
        pg_ctl=(*as_user, str(bindir / "pg_ctl")),
    )  # fmt: skip
    try:
        _pg_ctl(*as_user, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust",
                "-E", "UTF8")  # fmt: skip
        server.start()
        server.create_database("keel")
        yield server
    finally:
        # Whatever got as far as starting a postmaster (even if interrupted while it started).
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*server.pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True, timeout=120, cwd=root,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class ChromaServer:
    port: int
    path: Path
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def chroma_server(timeout_s: float = 60.0) -> Iterator[ChromaServer]:
    """Start ``chroma run`` (the installed chromadb's server) on loopback; stop it on exit,
    interrupted runs included (its whole process group; see the module's docstring)."""
    with terminate_gracefully():
        yield from _chroma_server(timeout_s)


def _chroma_server(timeout_s: float) -> Iterator[ChromaServer]:
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        found = shutil.which("chroma")
        if found is None:
            raise ConfigError("the `chroma` command is missing: reinstall chromadb (make install)")
        chroma = Path(found)
    root = Path(tempfile.mkdtemp(prefix="keel-chroma-"))
    port = free_port()
    log = (root / "chroma.log").open("wb")
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(root / "data"), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
        start_new_session=True,
    )  # fmt: skip
    try:
        server = ChromaServer(port=port, path=root / "data", pid=process.pid)
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                text = (root / "chroma.log").read_text(errors="replace").strip().splitlines()
                raise ConfigError(f"`chroma run` exited: {' '.join(text[-1:])}")
            try:
                with urllib.request.urlopen(f"{server.url}/api/v2/heartbeat", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"`chroma run` did not answer within {timeout_s:g} s"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        stop_group(process)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class RedisServer:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(timeout_s: float = 30.0) -> Iterator[RedisServer]:
    """Start ``redis-server`` on loopback with no persistence; stop it on exit (SIGINT and
    SIGTERM included, as for :func:`postgres_server`).

    Raises:
        ConfigError: redis-server is missing or does not answer.
    """
    with terminate_gracefully():
        yield from _redis_server(timeout_s)


def _redis_server(timeout_s: float) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        raise ConfigError(REDIS_HINT)
    root = Path(tempfile.mkdtemp(prefix="keel-redis-"))
    port = free_port()
    log = (root / "redis.log").open("wb")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root), "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while not _redis_ping(port):
            if process.poll() is not None:
                tail = (root / "redis.log").read_text(errors="replace").strip().splitlines()
                raise ConfigError(f"redis-server exited: {' '.join(tail[-1:])}")
            if time.monotonic() > deadline:
                raise ConfigError(f"redis-server did not answer within {timeout_s:g} s")
            time.sleep(0.1)
        yield RedisServer(port=port, pid=process.pid)
    finally:
        stop_group(process)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def stop_group(process: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """SIGTERM to a process started with ``start_new_session=True`` and all its children (its
    process group); SIGKILL for whatever is left after ``timeout_s``."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children that outlived it
            return
        except subprocess.TimeoutExpired:
            continue
