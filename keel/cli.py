"""The ``keel`` command: run, resume and inspect threads; ingest; the domain's verbs; the demo.

Every command takes ``--json`` and then prints one JSON object. Errors are one line on stderr and
a non-zero exit; ``--debug`` shows the traceback.

Each verb is a :class:`Verb`: a function that adds its options to its subcommand and a function
that runs it. ``VERBS`` lists Keel's own; the ``keel.verbs`` entry points of the installed
distribution add the rest (``keel eval`` and ``keel bench``, which the evals package owns:
``evals/cli.py``), so nothing here imports the evals.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from keel.errors import BadRequest, KeelError

if TYPE_CHECKING:
    from graph.domain import Domain
    from keel.app import KeelApp, Outcome
    from keel.settings import Settings
    from stores.budgets import ThreadSpend

EXIT_ERROR = 2
EXIT_BUG = 1
LOGGED = ("keel", "psycopg")
"""The loggers whose lines go to ``$KEEL_HOME/keel.log.jsonl``, not to stderr."""
GC_YOUNG = 7000
"""The ``keel`` program's young-generation threshold of the garbage collector (:func:`console`;
Python's default is 700)."""
PLUGINS = "keel.verbs"
"""The entry-point group whose :class:`Verb` objects join ``keel``'s own (pyproject.toml)."""

Result = dict[str, Any] | None
"""What a verb returns: the JSON object ``--json`` prints, or None when it printed its text."""


@dataclass(frozen=True)
class Verb:
    """One ``keel`` verb.

    Attributes:
        name: the subcommand, e.g. ``run``.
        help: its line in ``keel --help``.
        run: does it: ``run(args, settings)``, or ``run(args)`` for a verb with ``settings=False``.
        arguments: adds the verb's own options to its subcommand's parser (the common ones,
            ``--json``, ``--debug``, ``--faults``, ``--fault-seed``, ``--domain``, are there).
        description: the text of ``keel VERB --help`` (default: none beyond the options).
        settings: False for a verb that reads no setting and opens no store (``new-domain``).
    """

    name: str
    help: str
    run: Callable[..., Result]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    description: str | None = None
    settings: bool = True


def _common() -> argparse.ArgumentParser:
    """The options every verb takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument(
        "--faults", metavar="PROFILE",
        help="inject faults into the domain's integrations: a generic profile (transient, "
        "lost_responses), one the domain defines (Domain.fault_profiles) or a JSON FaultProfile "
        "(default: KEEL_FAULTS, none)",
    )  # fmt: skip
    common.add_argument(
        "--fault-seed", type=int, metavar="N", help="seed of the fault layer (KEEL_FAULT_SEED)"
    )
    common.add_argument(
        "--domain", metavar="PACKAGE.MODULE:ATTR",
        help="the domain to work on: a module and the domain object in it, e.g. "
        "domains.my_desk:MyDesk (default: KEEL_DOMAIN)",
    )  # fmt: skip
    return common


def _parser(verbs: Sequence[Verb]) -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Keel: a LangGraph agent template for production. Runs offline by default "
        "(SQLite checkpoints, embedded Chroma, runbook planner); settings come from KEEL_* "
        "environment variables and .env (see .env.example).",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in verbs:
        own = sub.add_parser(
            verb.name, parents=[common], help=verb.help, description=verb.description
        )
        if verb.arguments is not None:
            verb.arguments(own)
    return parser


def verbs() -> dict[str, Verb]:
    """Keel's own verbs, then those the ``keel.verbs`` entry points add, by name.

    Raises:
        TypeError: an entry point names something that is not a :class:`Verb`, or takes the
            name of one of Keel's own verbs (which :func:`main` finds without the entry points).
    """
    # Imported here, and called only when needed (_command_verbs): importlib.metadata and the
    # scan of every installed distribution's entry points cost a cold start tens of milliseconds.
    from importlib.metadata import entry_points

    table = dict(OWN)
    for point in entry_points(group=PLUGINS):
        verb = point.load()
        if not isinstance(verb, Verb):
            raise TypeError(f"entry point {point.name} = {point.value} is not a keel.cli.Verb")
        if verb.name in OWN:
            raise TypeError(f"entry point {point.name} = {point.value} takes keel's own verb")
        table[verb.name] = verb
    return table


def _command_verbs(argv: Sequence[str]) -> dict[str, Verb]:
    """The verbs to parse ``argv`` with: Keel's own when it names one of them (no entry point is
    read), else every verb (``keel --help`` lists the entry points' too; ``keel eval`` is one)."""
    # The common options may come before the verb (``keel --json show T``): the common parser
    # skips them as the full one does, abbreviations included; the first word left is the verb.
    # A bad common option is the same one-line error as the full parser's.
    common = argparse.ArgumentParser(prog="keel", add_help=False, parents=[_common()])
    _, rest = common.parse_known_args(argv)
    return dict(OWN) if rest and rest[0] in OWN else verbs()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    table = _command_verbs(argv)
    args = _parser(list(table.values())).parse_args(argv)
    try:
        result = _dispatch(table[args.command], args)
    except (KeelError, ValidationError) as err:
        message = str(err).splitlines()[0] if isinstance(err, KeelError) else _first_error(err)
        if args.debug:
            traceback.print_exc()
        print(f"keel: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("keel: interrupted; the thread is resumable", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        print(f"keel: unexpected {type(err).__name__}: {err} (run with --debug)", file=sys.stderr)
        return EXIT_BUG
    finally:
        _flush_traces()
        _loaded.cache_clear()  # a domain is built once per command, never reused by the next
    if args.json and result is not None:
        print(json.dumps(result, default=str))
    return 0


def console() -> NoReturn:
    """The ``keel`` program (pyproject's ``[project.scripts]``): :func:`main` on ``sys.argv``,
    then exit with its code.

    The garbage collector's young generation is collected every :data:`GC_YOUNG` allocations
    instead of Python's 700: a command's start allocates over a hundred thousand objects that
    live as long as the process (the imported modules, classes, pydantic schemas), and
    collecting them young over and over took about a tenth of ``keel show``'s time (issue 14's
    cold start); the few thousand objects more it may hold before a collection are nothing to a
    command, long ones (``keel eval``, ``keel bench``, ``keel demo``) included.

    Before the interpreter's own exit, every object alive is moved out of the garbage
    collector's reach (``gc.freeze``): the exit then skips a last collection over everything a
    command imported (LangGraph's, Chroma's, onnxruntime's objects), which took 0.15-0.3 s of a
    command's wall time on this project's machines (issue 14's cold start). Nothing is lost: the
    process ends, its memory with it; ``main`` has closed the stores and log files and flushed
    the traces; the ``atexit`` handlers (an OpenTelemetry exporter's flush) still run. Only here,
    never in :func:`main`, which a test or a notebook calls in a process that goes on.
    """
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    code = main()
    gc.freeze()
    sys.exit(code)


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {message}" if where else message


def _flush_traces() -> None:
    # Traces upload from a background thread; a short-lived process must wait for them.
    try:
        from langchain_core.tracers.langchain import wait_for_all_tracers

        wait_for_all_tracers()
    except Exception:  # tracing is best effort; it never fails a command
        pass


def _dispatch(verb: Verb, args: argparse.Namespace) -> Result:
    if not verb.settings:  # e.g. new-domain: it writes files and touches no store
        return verb.run(args)
    settings = _settings(args)
    handler = _json_logs(settings)
    try:
        return verb.run(args, settings)
    finally:
        for name in LOGGED:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with the common options' overrides."""
    from keel.settings import Settings

    # The domain decides the corpus and manifest defaults, so it is given at construction.
    settings = Settings(domain=args.domain) if args.domain else Settings()
    overrides: dict[str, Any] = {}
    if args.faults is not None:
        from tools.faults import profile_named

        # A bad profile is one clear line, before anything runs; the domain's own names count.
        profile_named(args.faults, _domain(settings).fault_profiles())
        overrides["faults"] = args.faults
    if args.fault_seed is not None:
        overrides["fault_seed"] = args.fault_seed
    return settings.model_copy(update=overrides) if overrides else settings


def _json_logs(settings: Settings) -> logging.Handler:
    """Structured logs of every recorded event, with the record's ids, next to the record.

    The connection pool's warnings (each failed reconnection while Postgres is down) go to the
    same file, at their own level: on stderr they would bury the one-line error.
    """
    from observability.logs import log_to_file

    handler = log_to_file(settings.home / "keel.log.jsonl")
    for name in LOGGED[1:]:
        logging.getLogger(name).addHandler(handler)
    return handler


def say(args: argparse.Namespace, data: dict[str, Any], text: str) -> Result:
    """``data`` for ``--json`` (printed by :func:`main`), else ``text`` printed now."""
    if not args.json:
        print(text)
        return None
    return data


def _told(args: argparse.Namespace, outcome: Outcome) -> Result:
    """Where a thread stands after a verb: printed, or its JSON."""
    from keel import report

    if not args.json:
        report.print_outcome(outcome)
    return outcome.model_dump(mode="json") if args.json else None


@contextlib.contextmanager
def _app(settings: Settings) -> Iterator[KeelApp]:
    from keel.app import KeelApp

    with KeelApp.open(settings, domain=_domain(settings)) as app:
        yield app


# The threads: run, resume, recover, show, fork.


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("request", help="the request, in plain words")
    parser.add_argument("--thread", help="thread id to use (default: a new UUID)")
    parser.add_argument(
        "--no-input", action="store_true", help="never ask interactively, even on a terminal"
    )


def _run(args: argparse.Namespace, settings: Settings) -> Result:
    from keel import report

    with _app(settings) as app:
        outcome = app.run(args.request, thread_id=args.thread)
        interactive = not (args.json or args.no_input) and sys.stdin.isatty()
        if not args.json:
            report.print_outcome(outcome)
        while interactive and outcome.status == "awaiting_approval":
            decision = report.ask(outcome, settings.reviewer)
            if decision is None:
                print(f"left waiting; later: keel resume {outcome.thread_id} --approve")
                break
            outcome = app.resume(outcome.thread_id, decision)
            report.print_outcome(outcome)
        return outcome.model_dump(mode="json") if args.json else None


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("thread", help="thread id printed by `keel run`")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--approve", action="store_true", help="approve every pending action")
    what.add_argument("--reject", action="store_true", help="reject the pending actions")
    what.add_argument("--edit", metavar="JSON", help="change arguments, e.g. '{\"amount\": 10}'")
    parser.add_argument("--reason", default="", help="why (with --reject)")
    parser.add_argument("--action", type=int, help="which pending action --edit changes (0-based)")
    parser.add_argument("--as", dest="reviewer", help="who is answering (default: KEEL_REVIEWER)")


def _resume(args: argparse.Namespace, settings: Settings) -> Result:
    from keel.app import Decision

    decision = Decision(
        kind="approve" if args.approve else "reject" if args.reject else "edit",
        reason=args.reason,
        edit=_parse_edit(args.edit) if args.edit is not None else None,
        action=args.action,
        reviewer=args.reviewer or settings.reviewer,
    )
    with _app(settings) as app:
        return _told(args, app.resume(args.thread, decision))


def _parse_edit(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(f"--edit is not valid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(value, dict) or not value:
        raise BadRequest("--edit must be a non-empty JSON object, e.g. '{\"amount\": 10}'")
    return value


def _recover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("thread", nargs="?", help="the thread (or --all)")
    parser.add_argument("--all", action="store_true", help="find and recover every stalled thread")


def _recover(args: argparse.Namespace, settings: Settings) -> Result:
    if args.all == (args.thread is not None):
        raise BadRequest("recover takes a thread id or --all (one of them)")
    with _app(settings) as app:
        if args.all:
            return _recover_all(app, args)
        return _told(args, app.recover(args.thread))


def _recover_all(app: KeelApp, args: argparse.Namespace) -> Result:
    """``keel recover --all``: progress on stderr as each thread is done, then the summary."""
    from keel.app import ThreadRecovery
    from keel.errors import RecoveryIncomplete

    def progress(item: ThreadRecovery) -> None:
        where = f" at {item.stalled_at}" if item.stalled_at else ""
        if item.refused is not None:
            said = f"refused: {item.refused}"
        elif item.error is not None:
            said = f"failed: {item.error}"
        else:
            said = f"{item.after}"
        print(f"recover {item.thread_id} ({item.before}{where}): {said}", file=sys.stderr)

    result = app.recover_all(progress)
    data = result.model_dump(mode="json")
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(result.by_status.items())) or "none"
    summary = (
        f"{result.threads} thread(s) ({statuses}): {result.recovered} recovered, "
        f"{result.still_stalled} still stalled, {result.refused} refused (a live worker holds "
        f"them), {result.failed} failed"
    )
    print(json.dumps(data) if args.json else summary)
    if not result.complete:
        raise RecoveryIncomplete(
            f"recover --all left {result.still_stalled + result.refused + result.failed} "
            "thread(s) unfinished (see above)"
        )
    return None


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("thread")
    parser.add_argument("--history", action="store_true", help="list the thread's checkpoints")


def _show(args: argparse.Namespace, settings: Settings) -> Result:
    from keel import report
    from keel.app import show_thread

    if args.history:
        with _app(settings) as app:
            rows = app.history(args.thread)
        if not args.json:
            report.print_history(rows)
        return {"thread_id": args.thread, "history": rows} if args.json else None
    # A status read: the checkpoint, the graph and the lease, no runtime context to build.
    outcome = show_thread(settings, args.thread)
    spend = _thread_spend(settings, args.thread)
    if not args.json:
        report.print_outcome(outcome)
        print(spend.describe())
    return outcome.model_dump(mode="json") | {"spend": spend.model_dump()} if args.json else None


def _thread_spend(settings: Settings, thread_id: str) -> ThreadSpend:
    """A thread's spend on models and what its budgets have left (``keel show``)."""
    from stores.backends import open_stores
    from stores.budgets import thread_spend

    store = open_stores(settings).budgets
    try:
        return thread_spend(store, settings.budgets, thread_id)
    finally:
        store.close()


def _fork_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("thread")
    parser.add_argument("checkpoint", help="a checkpoint id from `keel show THREAD --history`")


def _fork(args: argparse.Namespace, settings: Settings) -> Result:
    with _app(settings) as app:
        return _told(args, app.fork(args.thread, args.checkpoint))


def _events(args: argparse.Namespace, settings: Settings) -> Result:
    with _app(settings) as app:
        woken = app.dispatch_events()
    lines = [f"{e['type']} {e['key']}: woke {', '.join(e['woke']) or 'nobody'}" for e in woken]
    return say(args, {"events": woken}, "\n".join(lines) or "no new events")


# The domain: its verbs, a new one, its seed data, its integrations' health, its permissions.


def _domain(settings: Settings) -> Domain:
    """The configured domain, built once per command (the profile check, the verb and the app
    share it; ``main`` forgets it between commands)."""
    return _loaded(settings.domain)


@functools.lru_cache(maxsize=2)
def _loaded(spec: str) -> Domain:
    from graph.domain import load_domain

    return load_domain(spec)


def _domain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("verb", help="seed, list, or a verb of the domain")


def _domain_verb(args: argparse.Namespace, settings: Settings) -> Result:
    """``keel domain VERB``: one of the domain's own commands, or ``list`` to show them."""
    if args.verb == "seed":
        return _seed(args, settings)
    domain = _domain(settings)
    verbs = {"seed": "reset the backend to its seed data (Keel's own verb)"}
    verbs |= {name: command.help for name, command in domain.commands().items()}
    if args.verb == "list":
        text = "\n".join(f"{name:<10} {line}" for name, line in verbs.items())
        return say(args, {"domain": domain.name, "verbs": verbs}, f"{domain.name}:\n{text}")
    command = domain.commands().get(args.verb)
    if command is None:
        raise BadRequest(
            f"keel domain {args.verb}: {domain.name} has no such verb ({', '.join(verbs)})"
        )
    if not domain.is_prepared(settings):
        domain.prepare(settings)
    data, text = command.run(settings)
    return say(args, {"domain": domain.name, args.verb: data}, text)


def _new_domain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a lowercase Python package name, e.g. order_desk")
    parser.add_argument(
        "--into", metavar="DIR",
        help="the folder to write it in (default: ./domains when it is a package, else .)",
    )  # fmt: skip


def _new_domain(args: argparse.Namespace) -> Result:
    from pathlib import Path

    from keel.newdomain import new_domain

    into = Path(args.into) if args.into else Path("domains")
    if args.into is None and not (into / "__init__.py").is_file():
        into = Path(".")
    folder, spec = new_domain(args.name, into)
    text = (
        f"wrote {folder}\nnext:\n  pytest tests/contract --keel-domain={spec}\n"
        f"  KEEL_DOMAIN={spec} keel demo"
    )
    return say(args, {"folder": str(folder), "domain": spec}, text)


def _seed(args: argparse.Namespace, settings: Settings) -> Result:
    from stores.backends import open_stores

    domain = _domain(settings)
    domain.prepare(settings, reset=True)
    open_stores(settings).inbox.restart()
    return say(
        args,
        {"domain": domain.name, "seeded": str(settings.domain_db)},
        f"{domain.name}: seeded {settings.domain_db}",
    )


def _health(args: argparse.Namespace, settings: Settings) -> Result:
    from graph.domain import gated_registry
    from tools.health import probe

    domain = _domain(settings)
    if not domain.is_prepared(settings):
        domain.prepare(settings)
    tools = gated_registry(domain, settings)
    rows = [h.as_dict() for h in probe(tools, domain.health_probes())]
    if not args.json:
        for h in rows:
            print(
                f"{h['integration']:<15} {h['status']:<8} {h['latency_ms']:>8.2f} ms  "
                f"breaker {h['breaker']:<9} {h['detail']}"
            )
    return {"integrations": rows} if args.json else None


def _access_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--diff", metavar="REF", help="what changed since a git ref, e.g. HEAD~1")
    parser.add_argument(
        "--lock",
        action="store_true",
        help="record the reviewed access in the access lock",
    )


def _access(args: argparse.Namespace, settings: Settings) -> Result:
    from graph.domain import tool_registry
    from tools.permissions import (
        access_diff,
        access_lines,
        effective_access,
        load_manifest,
        manifest_at,
        parse_manifest,
        write_lock,
    )

    domain = _domain(settings)
    tools = tool_registry(domain, settings)
    manifest = load_manifest(settings.policy_file, tools, domain.scopes())
    access = effective_access(manifest, tools)
    if args.diff:
        text = manifest_at(args.diff, settings.policy_file)
        before = effective_access(
            parse_manifest(text, f"{args.diff}:{settings.policy_file.name}", tools,
                           domain.scopes()), tools)  # fmt: skip
        diff = access_diff(before, access)
        lines = [f"+ {x}" for x in diff["added"]] + [f"- {x}" for x in diff["removed"]]
        summary = f"effective access since {args.diff}: {len(diff['added'])} added, " + (
            f"{len(diff['removed'])} removed"
        )
        return say(args, {"ref": args.diff, **diff}, "\n".join([summary, *lines]))
    if args.lock:
        lock = write_lock(settings.policy_file, manifest, tools)
        return say(args, {"lock": str(lock)}, f"wrote {lock} (manifest {manifest.version})")
    text = f"manifest {settings.policy_file} (version {manifest.version})\n"
    return say(args, {"version": manifest.version, "agents": access},
                text + "\n".join(access_lines(access)))  # fmt: skip


# The corpus and the demo.


def _ingest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rebuild", action="store_true", help="drop the index and build it anew")


def _ingest(args: argparse.Namespace, settings: Settings) -> Result:
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    rep = CorpusStore(settings, embedder_for(settings)).ingest(rebuild=args.rebuild)
    data = {
        "added": rep.added,
        "removed": rep.removed,
        "unchanged": rep.unchanged,
        "quarantined": rep.quarantined,
    }
    text = f"ingested: {rep.added} added, {rep.removed} removed, {rep.unchanged} unchanged"
    for line in rep.quarantined:
        text += f"\nquarantined (never shown to a planner): {line}"
    return say(args, data, text)


def _demo(args: argparse.Namespace, settings: Settings) -> Result:
    from keel.demo import run_demo

    return run_demo(settings, as_json=args.json, domain=_domain(settings))


# The record: runs, usage, trace, explain, replay.


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    parser.add_argument(
        "--stalled", action="store_true",
        help="instead: every stalled thread in the checkpointer (worker gone mid-run), where it "
        "stopped; `keel recover --all` continues them",
    )  # fmt: skip


def _runs(args: argparse.Namespace, settings: Settings) -> Result:
    """The record says what each run did; the checkpoint and the lease say where its thread is
    now. A worker that died never wrote its run's end: its run is shown as its thread stands
    (``stalled``), not ``running`` forever."""
    from graph.status import open_thread_book
    from keel import report
    from keel.errors import ThreadNotFound
    from observability.records import open_record

    if args.limit < 1:
        raise BadRequest("--limit must be at least 1")
    if args.stalled:
        with open_thread_book(settings) as book:
            stalled = [t.model_dump(mode="json") for t in book.standings() if t.status == "stalled"]
        if not args.json:
            report.print_stalled(stalled)
        return {"stalled": stalled} if args.json else None
    store = open_record(settings)  # no record, nothing to list: say so before opening more
    try:
        rows = [r.model_dump(mode="json") for r in store.runs(args.limit)]
        with open_thread_book(settings) as book:
            for row in rows:
                if store.latest_run(row["thread_id"]) != row["run_id"]:
                    continue  # a fork's earlier run: its record is its history
                # Nothing checkpointed (refused before its first step, or deleted): the record's.
                with contextlib.suppress(ThreadNotFound):
                    row["status"] = book.standing(row["thread_id"]).status
    finally:
        store.close()
    if not args.json:
        report.print_runs(rows)
    return {"runs": rows} if args.json else None


def _usage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--thread", help="one thread (with its calls, one line each)")
    parser.add_argument("--user", help="one user")
    parser.add_argument("--team", help="one team")
    parser.add_argument("--period", choices=["lifetime", "day", "month"], help="one period")


def _usage(args: argparse.Namespace, settings: Settings) -> Result:
    """What the budget store holds: running totals (held reservations at their worst case) and,
    for one thread, its calls."""
    from agents.models import describe_spend
    from stores.backends import open_stores
    from stores.budgets import usage_rows

    store = open_stores(settings).budgets
    named = [(s, w) for s, w in (("thread", args.thread), ("user", args.user),
                                 ("team", args.team)) if w]  # fmt: skip
    if len(named) > 1:
        raise BadRequest("name one of --thread, --user, --team")
    scope, who = named[0] if named else (None, None)
    rows = usage_rows(store, settings.budgets, scope=scope, who=who, period=args.period)
    calls = store.spends(thread_id=args.thread) if args.thread else []
    if args.json:
        return {
            "totals": [r.model_dump(mode="json") for r in rows],
            "calls": [c.model_dump(mode="json") for c in calls],
        }
    if not rows:
        print("no model calls metered" + (f" for {scope} {who}" if scope else ""))
    for r in rows:
        window = f" {r.window}" if r.window else ""
        left = "; ".join(
            b["budget"] + ": left " + ", ".join(
                f"{v} {k.removesuffix('_left')}" for k, v in b.items() if k != "budget"
            )
            for b in r.budgets
        )  # fmt: skip
        print(f"{r.scope} {r.who} {r.period}{window}: {r.tokens} tokens, {r.calls} calls, "
              f"${r.cost_usd:.6f}" + (f"  [{left}]" if left else ""))  # fmt: skip
    for c in calls:
        print(f"  {c.id}: {describe_spend(c)}" + (f" ({c.note})" if c.note else ""))
    return None


def _run_id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run id (or a unique prefix), or a thread id")


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    _run_id_argument(parser)
    parser.add_argument("--clock", action="store_true", help="show the clock readings too")


def _recorded(settings: Settings, run: str) -> list[Any]:
    """A recorded run's events (the flight record only: nothing runs)."""
    from observability.records import open_record

    store = open_record(settings)
    try:
        return store.events(store.resolve(run))
    finally:
        store.close()


def _trace(args: argparse.Namespace, settings: Settings) -> Result:
    from observability.views import render_tree, trace_tree

    tree = trace_tree(_recorded(settings, args.run))
    if not args.json:
        print(render_tree(tree, show_clock=args.clock))
    return tree.model_dump(mode="json") if args.json else None


def _explain(args: argparse.Namespace, settings: Settings) -> Result:
    from observability.views import explain, render_explanation

    why = explain(_recorded(settings, args.run))
    if not args.json:
        print(render_explanation(why))
    return why.model_dump(mode="json") if args.json else None


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    _run_id_argument(parser)
    parser.add_argument("--policy", metavar="FILE", help="replay under another permission manifest")


def _replay(args: argparse.Namespace, settings: Settings) -> Result:
    from pathlib import Path

    from keel import report
    from observability.replay import replay_run

    policy = Path(args.policy) if args.policy else None
    if policy is not None and not policy.is_file():
        raise BadRequest(f"--policy {args.policy}: no such file")
    with _app(settings) as app:
        verdict = replay_run(app, args.run, policy_file=policy)
    if not args.json:
        report.print_replay(verdict)
    return verdict.model_dump(mode="json") if args.json else None


VERBS: tuple[Verb, ...] = (
    Verb("run", "run a request until done or a human is needed", _run, _run_arguments),
    Verb("resume", "answer a thread's pending approval", _resume, _resume_arguments),
    Verb(
        "recover",
        "continue a stalled run (its worker crashed or was killed) from its checkpoint",
        _recover,
        _recover_arguments,
        description="Continue a stalled thread from its last checkpoint, applying the writes a "
        "task saved there before its worker died. Refused for a thread that finished or waits "
        "for a human or an event, and for one a live worker holds (its lease: a worker that "
        "died on this machine is seen at once, one on another machine after KEEL_LEASE_TTL_S). "
        "With --all: every stalled thread in the checkpointer, with progress on stderr and a "
        "summary; exit 2 if any is left stalled, refused or failed.",
    ),
    Verb(
        "show",
        "where a thread stands, read from its checkpoint: done, refused or escalated (it "
        "ended), awaiting_approval or awaiting_event, running (a live worker has it) or stalled "
        "at NODE (its worker died: keel recover)",
        _show,
        _show_arguments,
    ),
    Verb(
        "fork",
        "run a thread again from an earlier checkpoint (see show --history); a new branch",
        _fork,
        _fork_arguments,
    ),
    Verb(
        "domain",
        "the domain's own verbs (KEEL_DOMAIN): `seed` resets its backend; `list` shows the rest",
        _domain_verb,
        _domain_arguments,
    ),
    Verb(
        "new-domain",
        "write a minimal working domain folder (one read and one irreversible tool, a backend to "
        "replace, a two-document corpus, a manifest, a scenario) to make Keel yours",
        _new_domain,
        _new_domain_arguments,
        settings=False,
    ),
    Verb(
        "seed",
        "(re)create the domain's backend with its seed data (same as `keel domain seed`)",
        _seed,
    ),
    Verb("health", "probe each integration: status, latency, breaker", _health),
    Verb("ingest", "index the corpus into Chroma", _ingest, _ingest_arguments),
    Verb("demo", "reset the domain's data and run its demo requests end to end", _demo),
    Verb(
        "runs",
        "recent recorded runs: status (from the checkpoint), duration, calls, approvals",
        _runs,
        _runs_arguments,
    ),
    Verb(
        "usage",
        "model spend (tokens, calls, dollars) per thread, user and team, per period, with what "
        "is left of each budget",
        _usage,
        _usage_arguments,
    ),
    Verb("trace", "a recorded run's timeline as a tree", _trace, _trace_arguments),
    Verb("explain", "why a recorded run ended as it did", _explain, _run_id_argument),
    Verb(
        "replay",
        "re-execute a recorded run from its record (nothing live) and compare decisions",
        _replay,
        _replay_arguments,
    ),
    Verb("events", "wake the threads waiting for new business events (the outbox relay)", _events),
    Verb(
        "access",
        "each agent's effective permissions (the manifest resolved against the tools)",
        _access,
        _access_arguments,
    ),
)
"""Keel's own verbs, in the order ``keel --help`` lists them (the entry points' come after)."""

OWN: dict[str, Verb] = {verb.name: verb for verb in VERBS}
"""Keel's own verbs by name: the table a command naming one of them is parsed with."""


if __name__ == "__main__":
    console()
