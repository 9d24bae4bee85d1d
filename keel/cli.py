"""The ``keel`` command: run, resume and inspect threads; ingest; the domain's verbs; the demo.

Every command takes ``--json`` and then prints one JSON object. Errors are one line on stderr and
a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keel.errors import BadRequest, KeelError

if TYPE_CHECKING:
    from graph.domain import Domain
    from keel.settings import Settings
    from stores.budgets import ThreadSpend

EXIT_ERROR = 2
EXIT_BUG = 1
LOGGED = ("keel", "psycopg")
"""The loggers whose lines go to ``$KEEL_HOME/keel.log.jsonl``, not to stderr."""


def _parser() -> argparse.ArgumentParser:
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

    parser = argparse.ArgumentParser(
        prog="keel",
        description="Keel: a LangGraph agent template for production. Runs offline by default "
        "(SQLite checkpoints, embedded Chroma, runbook planner); settings come from KEEL_* "
        "environment variables and .env (see .env.example).",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", parents=[common], help="run a request until done or a human is needed"
    )
    run.add_argument("request", help="the request, in plain words")
    run.add_argument("--thread", help="thread id to use (default: a new UUID)")
    run.add_argument(
        "--no-input", action="store_true", help="never ask interactively, even on a terminal"
    )

    resume = sub.add_parser("resume", parents=[common], help="answer a thread's pending approval")
    resume.add_argument("thread", help="thread id printed by `keel run`")
    what = resume.add_mutually_exclusive_group(required=True)
    what.add_argument("--approve", action="store_true", help="approve every pending action")
    what.add_argument("--reject", action="store_true", help="reject the pending actions")
    what.add_argument("--edit", metavar="JSON", help="change arguments, e.g. '{\"amount\": 10}'")
    resume.add_argument("--reason", default="", help="why (with --reject)")
    resume.add_argument("--action", type=int, help="which pending action --edit changes (0-based)")
    resume.add_argument("--as", dest="reviewer", help="who is answering (default: KEEL_REVIEWER)")

    recover = sub.add_parser(
        "recover", parents=[common],
        help="continue a stalled run (its worker crashed or was killed) from its checkpoint",
        description="Continue a stalled thread from its last checkpoint, applying the writes a "
        "task saved there before its worker died. Refused for a thread that finished or waits "
        "for a human or an event, and for one a live worker holds (its lease: a worker that "
        "died on this machine is seen at once, one on another machine after KEEL_LEASE_TTL_S). "
        "With --all: every stalled thread in the checkpointer, with progress on stderr and a "
        "summary; exit 2 if any is left stalled, refused or failed.",
    )  # fmt: skip
    recover.add_argument("thread", nargs="?", help="the thread (or --all)")
    recover.add_argument("--all", action="store_true", help="find and recover every stalled thread")

    show = sub.add_parser(
        "show", parents=[common],
        help="where a thread stands, read from its checkpoint: done, refused or escalated (it "
        "ended), awaiting_approval or awaiting_event, running (a live worker has it) or stalled "
        "at NODE (its worker died: keel recover)",
    )  # fmt: skip
    show.add_argument("thread")
    show.add_argument("--history", action="store_true", help="list the thread's checkpoints")

    fork = sub.add_parser(
        "fork",
        parents=[common],
        help="run a thread again from an earlier checkpoint (see show --history); a new branch",
    )
    fork.add_argument("thread")
    fork.add_argument("checkpoint", help="a checkpoint id from `keel show THREAD --history`")

    domain = sub.add_parser(
        "domain", parents=[common],
        help="the domain's own verbs (KEEL_DOMAIN): `seed` resets its backend; `list` shows the "
        "rest",
    )  # fmt: skip
    domain.add_argument("verb", help="seed, list, or a verb of the domain")
    new = sub.add_parser(
        "new-domain", parents=[common],
        help="write a minimal working domain folder (one read and one irreversible tool, a "
        "backend to replace, a two-document corpus, a manifest, a scenario) to make Keel yours",
    )  # fmt: skip
    new.add_argument("name", help="a lowercase Python package name, e.g. order_desk")
    new.add_argument(
        "--into", metavar="DIR",
        help="the folder to write it in (default: ./domains when it is a package, else .)",
    )  # fmt: skip
    sub.add_parser(
        "seed", parents=[common], help="(re)create the domain's backend with its seed data "
        "(same as `keel domain seed`)",
    )  # fmt: skip
    sub.add_parser(
        "health", parents=[common], help="probe each integration: status, latency, breaker"
    )
    ingest = sub.add_parser("ingest", parents=[common], help="index the corpus into Chroma")
    ingest.add_argument("--rebuild", action="store_true", help="drop the index and build it anew")
    sub.add_parser(
        "demo",
        parents=[common],
        help="reset the domain's data and run its demo requests end to end",
    )
    evaluate = sub.add_parser("eval", parents=[common], help="run eval suites and print scores")
    evaluate.add_argument(
        "--suite",
        action="append",
        help="a suite to run (repeatable): retrieval, faults, attacks, record, scenarios, "
        "compounding, screening, crashes, hostile, agentdojo (alone); `all` for every one. "
        "Default: every suite but crashes (a kill-point sweep of about an hour), which the output "
        "lists under not_run, and agentdojo",
    )
    evaluate.add_argument(
        "--backend", action="append", choices=["sqlite", "postgres"],
        help="crashes: a backend to sweep (repeatable; default: both)",
    )  # fmt: skip
    evaluate.add_argument(
        "--request", action="append", metavar="NAME",
        help="crashes: a request to sweep (repeatable; default: all four): refund, bank_refund, "
        "billing_email, close_ticket",
    )  # fmt: skip
    evaluate.add_argument(
        "--every", type=int, metavar="K",
        help="crashes: kill at every K-th boundary only (default: 1, every boundary)",
    )  # fmt: skip
    evaluate.add_argument(
        "--jobs", type=int, metavar="N", help="crashes: kill points run at once (default: 1)"
    )
    evaluate.add_argument(
        "--engine", action="store_true",
        help="budgets: also run 20 threads of one team on the engine (Aegra worker processes, "
        "PostgreSQL, Redis), the model served over HTTP",
    )  # fmt: skip
    evaluate.add_argument(
        "--runs", type=int, help="compounding: runs (model seeds) per agent and point "
        "(default: 10)",
    )  # fmt: skip
    evaluate.add_argument(
        "--k", type=int, help="scenarios: runs per scenario and agent, each with its own fault "
        "seed; pass^k needs all k (default: 3)",
    )  # fmt: skip
    evaluate.add_argument(
        "--scenarios", action="append", metavar="PATH",
        help="scenarios: a scenario file or folder to run instead of the domain's (repeatable)",
    )  # fmt: skip
    evaluate.add_argument(
        "--plot", action="store_true",
        help="scenarios: also sweep the fault rate and write scorecard.png (with no --suite, "
        "runs the scenarios suite only)",
    )  # fmt: skip
    evaluate.add_argument(
        "--model", metavar="NAME",
        help="scenarios: run Keel's model planner and both baselines on this real model, at "
        "OPENAI_BASE_URL (an OpenAI-compatible server) or OpenAI (OPENAI_API_KEY); one of them "
        "must be set. Runs the scenarios suite only, k=1 unless --k",
    )  # fmt: skip
    evaluate.add_argument(
        "--scenario", action="append", metavar="NAME",
        help="with --model: run only this scenario (repeatable)",
    )  # fmt: skip
    evaluate.add_argument(
        "--limit", type=int, metavar="N", help="with --model: run only the first N scenarios"
    )
    evaluate.add_argument(
        "--agentdojo-suite", action="append", metavar="NAME",
        help="agentdojo: an AgentDojo suite to run (repeatable; default: banking, slack, travel; "
        "any installed suite by name)",
    )  # fmt: skip
    evaluate.add_argument(
        "--attack", metavar="NAME",
        help="agentdojo: an AgentDojo attack by name (default: important_instructions)",
    )  # fmt: skip
    evaluate.add_argument(
        "--reviewer", action="append", choices=["approve_all", "approve_unflagged", "reject_all"],
        help="agentdojo: who answers the approvals (repeatable; default: all three)",
    )  # fmt: skip
    evaluate.add_argument(
        "--without-screen", action="store_true",
        help="agentdojo: an ablation: the injection screen finds nothing in outside text, so "
        "every attack's text reaches the model (what structure alone stops)",
    )  # fmt: skip
    evaluate.add_argument(
        "--out", metavar="DIR",
        help="where the scorecard (scorecard.json, scorecard.md, scorecard.png), the "
        "compounding curve (compounding.json, .md, .png), the hostile suite's figures "
        "(hostile.json, .md) or the budgets eval's (budgets-eval.json, .md) are written "
        "(default: KEEL_HOME/scorecard, KEEL_HOME/compounding, KEEL_HOME/hostile, "
        "KEEL_HOME/budgets; with --model, KEEL_HOME/scorecard-real)",
    )  # fmt: skip
    runs = sub.add_parser(
        "runs", parents=[common],
        help="recent recorded runs: status (from the checkpoint), duration, calls, approvals",
    )  # fmt: skip
    runs.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    runs.add_argument(
        "--stalled", action="store_true",
        help="instead: every stalled thread in the checkpointer (worker gone mid-run), where it "
        "stopped; `keel recover --all` continues them",
    )  # fmt: skip
    usage = sub.add_parser(
        "usage", parents=[common],
        help="model spend (tokens, calls, dollars) per thread, user and team, per period, with "
        "what is left of each budget",
    )  # fmt: skip
    usage.add_argument("--thread", help="one thread (with its calls, one line each)")
    usage.add_argument("--user", help="one user")
    usage.add_argument("--team", help="one team")
    usage.add_argument("--period", choices=["lifetime", "day", "month"], help="one period")
    trace = sub.add_parser("trace", parents=[common], help="a recorded run's timeline as a tree")
    trace.add_argument("run", help="run id (or a unique prefix), or a thread id")
    trace.add_argument("--clock", action="store_true", help="show the clock readings too")
    explain = sub.add_parser("explain", parents=[common], help="why a recorded run ended as it did")
    explain.add_argument("run", help="run id (or a unique prefix), or a thread id")
    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="re-execute a recorded run from its record (nothing live) and compare decisions",
    )
    replay.add_argument("run", help="run id (or a unique prefix), or a thread id")
    replay.add_argument("--policy", metavar="FILE", help="replay under another permission manifest")
    bench = sub.add_parser(
        "bench", parents=[common],
        help="run benchmarks and print numbers (all of them: the headline figures against their "
        "targets first)",
    )  # fmt: skip
    bench.add_argument(
        "--only", action="append", help="one benchmark (repeatable; default: all of them)"
    )
    sub.add_parser(
        "events", parents=[common],
        help="wake the threads waiting for new business events (the outbox relay)",
    )  # fmt: skip
    access = sub.add_parser(
        "access", parents=[common],
        help="each agent's effective permissions (the manifest resolved against the tools)",
    )  # fmt: skip
    access.add_argument("--diff", metavar="REF", help="what changed since a git ref, e.g. HEAD~1")
    access.add_argument(
        "--lock",
        action="store_true",
        help="record the reviewed access in the access lock",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = _dispatch(args)
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
    if args.json and result is not None:
        print(json.dumps(result, default=str))
    return 0


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


def _dispatch(args: argparse.Namespace) -> dict[str, Any] | None:
    from keel.settings import Settings

    if args.command == "new-domain":  # needs no settings: it writes files and touches no store
        return _new_domain(args)
    # The domain decides the corpus and manifest defaults, so it is given at construction.
    settings = Settings(domain=args.domain) if getattr(args, "domain", None) else Settings()
    overrides: dict[str, Any] = {}
    if getattr(args, "faults", None) is not None:
        from graph.domain import load_domain
        from tools.faults import profile_named

        # A bad profile is one clear line, before anything runs; the domain's own names count.
        profile_named(args.faults, load_domain(settings.domain).fault_profiles())
        overrides["faults"] = args.faults
    if getattr(args, "fault_seed", None) is not None:
        overrides["fault_seed"] = args.fault_seed
    settings = settings.model_copy(update=overrides) if overrides else settings
    handler = _json_logs(settings)
    try:
        return _command(args, settings)
    finally:
        for name in LOGGED:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _command(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    from graph.domain import gated_registry, load_domain
    from keel import report
    from keel.app import Decision, KeelApp, show_thread

    if args.command in ("runs", "trace", "explain"):
        return _record_view(args, settings)
    if args.command == "usage":
        return _usage(args, settings)
    if args.command == "show" and not args.history:
        # A status read: the checkpoint, the graph and the lease, no runtime context to build.
        outcome = show_thread(settings, args.thread)
        spend = _thread_spend(settings, args.thread)
        if not args.json:
            report.print_outcome(outcome)
            print(spend.describe())
        return (
            outcome.model_dump(mode="json") | {"spend": spend.model_dump()} if args.json else None
        )
    domain = load_domain(settings.domain)
    if args.command == "seed" or (args.command == "domain" and args.verb == "seed"):
        from stores.backends import open_stores

        domain.prepare(settings, reset=True)
        open_stores(settings).inbox.restart()
        return _say(
            args,
            {"domain": domain.name, "seeded": str(settings.domain_db)},
            f"{domain.name}: seeded {settings.domain_db}",
        )
    if args.command == "domain":
        return _domain_verb(args, settings, domain)
    if args.command == "health":
        from tools.health import probe

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
    if args.command == "ingest":
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
        return _say(args, data, text)
    if args.command == "eval":
        return _eval(args, settings)
    if args.command == "bench":
        from evals.bench import measured_figures, run_benches, summary_table

        results = run_benches(args.only, settings, progress=sys.stderr.isatty())
        if args.only is None and not args.json:
            print(summary_table(results["summary"]) + "\n\ndetails:")
            results = results["benches"]
        elif not args.json and measured_figures(results):
            print(summary_table(measured_figures(results)) + "\n\ndetails:")
        return _report(args, results)
    if args.command == "access":
        return _access(args, settings, domain)
    if args.command == "demo":
        from keel.demo import run_demo

        return run_demo(settings, as_json=args.json)

    with KeelApp.open(settings) as app:
        if args.command == "replay":
            from pathlib import Path

            from observability.replay import replay_run

            policy = Path(args.policy) if args.policy else None
            if policy is not None and not policy.is_file():
                raise BadRequest(f"--policy {args.policy}: no such file")
            verdict = replay_run(app, args.run, policy_file=policy)
            if not args.json:
                report.print_replay(verdict)
            return verdict.model_dump(mode="json") if args.json else None
        if args.command == "run":
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
        if args.command == "resume":
            decision = Decision(
                kind="approve" if args.approve else "reject" if args.reject else "edit",
                reason=args.reason,
                edit=_parse_edit(args.edit) if args.edit is not None else None,
                action=args.action,
                reviewer=args.reviewer or settings.reviewer,
            )
            outcome = app.resume(args.thread, decision)
            if not args.json:
                report.print_outcome(outcome)
            return outcome.model_dump(mode="json") if args.json else None
        if args.command == "fork":
            outcome = app.fork(args.thread, args.checkpoint)
            if not args.json:
                report.print_outcome(outcome)
            return outcome.model_dump(mode="json") if args.json else None
        if args.command == "events":
            woken = app.dispatch_events()
            lines = [f"{e['type']} {e['key']}: woke {', '.join(e['woke']) or 'nobody'}"
                     for e in woken]  # fmt: skip
            return _say(args, {"events": woken}, "\n".join(lines) or "no new events")
        if args.command == "recover":
            if args.all == (args.thread is not None):
                raise BadRequest("recover takes a thread id or --all (one of them)")
            if args.all:
                return _recover_all(app, args)
            outcome = app.recover(args.thread)
            if not args.json:
                report.print_outcome(outcome)
            return outcome.model_dump(mode="json") if args.json else None
        if args.command == "show":  # --history; a plain show is read above
            rows = app.history(args.thread)
            if not args.json:
                report.print_history(rows)
            return {"thread_id": args.thread, "history": rows} if args.json else None
    raise BadRequest(f"unknown command {args.command}")


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


def _record_view(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """``runs``, ``trace`` and ``explain``: read the flight record (and, for ``runs``, each
    thread's checkpoint and lease), run nothing."""
    from observability.records import open_record
    from observability.views import explain, render_explanation, render_tree, trace_tree

    if args.command == "runs":
        return _runs(args, settings)
    store = open_record(settings)
    try:
        events = store.events(store.resolve(args.run))
        if args.command == "trace":
            tree = trace_tree(events)
            if not args.json:
                print(render_tree(tree, show_clock=args.clock))
            return tree.model_dump(mode="json") if args.json else None
        why = explain(events)
        if not args.json:
            print(render_explanation(why))
        return why.model_dump(mode="json") if args.json else None
    finally:
        store.close()


def _thread_spend(settings: Settings, thread_id: str) -> ThreadSpend:
    """A thread's spend on models and what its budgets have left (``keel show``)."""
    from stores.backends import open_stores
    from stores.budgets import thread_spend

    store = open_stores(settings).budgets
    try:
        return thread_spend(store, settings.budgets, thread_id)
    finally:
        store.close()


def _usage(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
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


def _runs(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
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
            stalled = [t.model_dump(mode="json") for t in book.statuses() if t.status == "stalled"]
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
                    row["status"] = book.status(row["thread_id"]).status
    finally:
        store.close()
    if not args.json:
        report.print_runs(rows)
    return {"runs": rows} if args.json else None


def _recover_all(app: Any, args: argparse.Namespace) -> dict[str, Any] | None:
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


def _domain_verb(
    args: argparse.Namespace, settings: Settings, domain: Domain
) -> dict[str, Any] | None:
    """``keel domain VERB``: one of the domain's own commands, or ``list`` to show them."""
    verbs = {"seed": "reset the backend to its seed data (Keel's own verb)"}
    verbs |= {name: command.help for name, command in domain.commands().items()}
    if args.verb == "list":
        text = "\n".join(f"{name:<10} {line}" for name, line in verbs.items())
        return _say(args, {"domain": domain.name, "verbs": verbs}, f"{domain.name}:\n{text}")
    command = domain.commands().get(args.verb)
    if command is None:
        raise BadRequest(
            f"keel domain {args.verb}: {domain.name} has no such verb ({', '.join(verbs)})"
        )
    if not domain.is_prepared(settings):
        domain.prepare(settings)
    data, text = command.run(settings)
    return _say(args, {"domain": domain.name, args.verb: data}, text)


def _access(args: argparse.Namespace, settings: Settings, domain: Domain) -> dict[str, Any] | None:
    from tools.permissions import (
        access_diff,
        access_lines,
        effective_access,
        load_manifest,
        manifest_at,
        parse_manifest,
        write_lock,
    )

    tools = domain.tools(settings)
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
        return _say(args, {"ref": args.diff, **diff}, "\n".join([summary, *lines]))
    if args.lock:
        lock = write_lock(settings.policy_file, manifest, tools)
        return _say(args, {"lock": str(lock)}, f"wrote {lock} (manifest {manifest.version})")
    text = f"manifest {settings.policy_file} (version {manifest.version})\n"
    return _say(args, {"version": manifest.version, "agents": access},
                text + "\n".join(access_lines(access)))  # fmt: skip


def _new_domain(args: argparse.Namespace) -> dict[str, Any] | None:
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
    return _say(args, {"folder": str(folder), "domain": spec}, text)


def _parse_edit(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(f"--edit is not valid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(value, dict) or not value:
        raise BadRequest("--edit must be a non-empty JSON object, e.g. '{\"amount\": 10}'")
    return value


def _curve_text(curve: dict[str, Any]) -> str:
    from evals.compounding import markdown

    return markdown(curve)


def _hostile_text(report: dict[str, Any]) -> str:
    from evals.hostile import table

    return table(report)


def _eval(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """Run the suites; the scenarios' scorecard is also written as JSON and Markdown (and PNG)."""
    from pathlib import Path

    from evals.runner import run_suites
    from evals.scorecard import markdown, write_scorecard

    if args.k is not None and args.k < 1:
        raise BadRequest("--k must be at least 1")
    if "agentdojo" in (args.suite or []):
        return _eval_agentdojo(args, settings)
    if args.agentdojo_suite or args.attack or args.reviewer or args.without_screen:
        raise BadRequest(
            "--agentdojo-suite, --attack, --reviewer and --without-screen go with --suite agentdojo"
        )
    if args.model is not None:
        return _eval_real_model(args, settings)
    if args.scenario or args.limit is not None:
        raise BadRequest("--scenario and --limit go with --model (the real-model scorecard)")
    update: dict[str, Any] = {"eval_plot": args.plot or settings.eval_plot}
    if args.k is not None:
        update["eval_k"] = args.k
        update["eval_compounding_k"] = args.k
    if args.runs is not None:
        if args.runs < 1:
            raise BadRequest("--runs must be at least 1")
        update["eval_compounding_runs"] = args.runs
    if args.out and {"compounding", "hostile", "budgets"} & set(args.suite or []):
        update["eval_out"] = Path(args.out)
    if args.engine:
        if "budgets" not in (args.suite or []):
            raise BadRequest("--engine goes with --suite budgets")
        update["eval_budgets_engine"] = True
    if args.every is not None and args.every < 1:
        raise BadRequest("--every must be at least 1")
    if args.jobs is not None and not 1 <= args.jobs <= 16:
        raise BadRequest("--jobs must be between 1 and 16")
    crash_options = {"eval_crash_backends": args.backend, "eval_crash_requests": args.request,
                     "eval_crash_every": args.every, "eval_crash_jobs": args.jobs}  # fmt: skip
    update |= {k: v for k, v in crash_options.items() if v is not None}
    if args.scenarios:
        missing = [p for p in args.scenarios if not Path(p).exists()]
        if missing:
            raise BadRequest(f"--scenarios: no such file or folder: {', '.join(missing)}")
        update["eval_scenarios"] = [Path(p).resolve() for p in args.scenarios]
    suites = args.suite or (["scenarios"] if args.plot else None)
    args.suite = suites  # what was asked for, as _report reads it
    results = run_suites(suites, settings.model_copy(update=update), progress=sys.stderr.isatty())
    for name, render in (("compounding", _curve_text), ("hostile", _hostile_text)):
        result = results.get(name)
        if result is None or args.json:
            continue
        print(render(result))
        print(f"written: {', '.join(result.get('written', {}).values())}")
        results = {other: r for other, r in results.items() if other != name}
        if not results:
            return None
    card = results.get("scenarios")
    if card is not None:
        folder = Path(args.out) if args.out else settings.home / "scorecard"
        card["written"] = write_scorecard(card, folder)
        if not args.json:
            print(markdown(card))
            print(f"written: {', '.join(card['written'].values())}")
            results = {name: r for name, r in results.items() if name != "scenarios"}
            if not results:
                return None
    return _report(args, results)


def _eval_agentdojo(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """AgentDojo's suites (``--suite agentdojo``, alone): scores per suite, agent and reviewer."""
    from evals.runner import run_agentdojo

    if args.suite != ["agentdojo"]:
        raise BadRequest("--suite agentdojo runs alone (it has options of its own)")
    results = run_agentdojo(
        settings, suites=args.agentdojo_suite, attack=args.attack, reviewers=args.reviewer,
        model=args.model, limit=args.limit, progress=sys.stderr.isatty(),
        screen=not args.without_screen,
    )  # fmt: skip
    if args.json:
        return results
    print(json.dumps(results, indent=2))
    return None


def _eval_real_model(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | None:
    """The scenarios' scorecard with every model decision made by a real model (--model)."""
    from pathlib import Path

    from evals.real_model import DEFAULT_K, RealModel, real_markdown, run_real_scorecard
    from evals.scorecard import write_scorecard

    if args.suite and args.suite != ["scenarios"]:
        raise BadRequest("--model runs the scenarios suite only: --suite scenarios --model NAME")
    if args.plot:
        raise BadRequest("--plot sweeps tool faults with the scripted model; not with --model")
    model = RealModel.from_settings(settings, args.model)
    paths = None
    if args.scenarios:
        missing = [p for p in args.scenarios if not Path(p).exists()]
        if missing:
            raise BadRequest(f"--scenarios: no such file or folder: {', '.join(missing)}")
        paths = [Path(p).resolve() for p in args.scenarios]
    card = run_real_scorecard(
        settings,
        model,
        k=args.k or DEFAULT_K,
        paths=paths,
        names=args.scenario or [],
        limit=args.limit,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    folder = Path(args.out) if args.out else settings.home / "scorecard-real"
    card["written"] = write_scorecard(card, folder, render=real_markdown)
    if args.json:
        return card
    print(real_markdown(card))
    print(f"written: {', '.join(card['written'].values())}")
    return None


def _report(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any] | None:
    """Scores or figures: one asked for prints bare, several print keyed by name."""
    asked = getattr(args, "suite", None) or getattr(args, "only", None)
    if asked and len(results) == 1:
        results = next(iter(results.values()))
    if not args.json:
        print(json.dumps(results, indent=2))
        return None
    return results


def _say(args: argparse.Namespace, data: dict[str, Any], text: str) -> dict[str, Any] | None:
    if not args.json:
        print(text)
        return None
    return data


if __name__ == "__main__":
    sys.exit(main())
