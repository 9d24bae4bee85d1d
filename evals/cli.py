"""``keel eval`` and ``keel bench``: the evals package's verbs.

The ``keel.verbs`` entry points (pyproject.toml) add :data:`EVAL` and :data:`BENCH` to the
``keel`` command, so Keel's runtime imports nothing from the evals (``keel.cli``). What the eval
verb is asked is an :class:`evals.options.EvalOptions`, built here from its flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.cli import Result, Verb
from keel.errors import BadRequest

if TYPE_CHECKING:
    from keel.settings import Settings

AGENTDOJO_ONLY = ("agentdojo_suite", "attack", "reviewer", "without_screen")
"""The options that go with ``--suite agentdojo`` only."""


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        action="append",
        help="a suite to run (repeatable): retrieval, faults, attacks, record, scenarios, "
        "compounding, screening, crashes, hostile, agentdojo (alone); `all` for every one. "
        "Default: every suite but crashes (a kill-point sweep of about an hour), which the output "
        "lists under not_run, and agentdojo",
    )
    parser.add_argument(
        "--backend", action="append", choices=["sqlite", "postgres"],
        help="crashes: a backend to sweep (repeatable; default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--request", action="append", metavar="NAME",
        help="crashes: a request to sweep (repeatable; default: all four): refund, bank_refund, "
        "billing_email, close_ticket",
    )  # fmt: skip
    parser.add_argument(
        "--every", type=int, metavar="K",
        help="crashes: kill at every K-th boundary only (default: 1, every boundary)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, metavar="N", help="crashes: kill points run at once (default: 1)"
    )
    parser.add_argument(
        "--engine", action="store_true",
        help="budgets: also run 20 threads of one team on the engine (Aegra worker processes, "
        "PostgreSQL, Redis), the model served over HTTP (KEEL_EVAL_BUDGETS_ENGINE)",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=int, help="compounding: runs (model seeds) per agent and point "
        "(default: 10)",
    )  # fmt: skip
    parser.add_argument(
        "--k", type=int, help="scenarios: runs per scenario and agent, each with its own fault "
        "seed; pass^k needs all k (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios", action="append", metavar="PATH",
        help="scenarios: a scenario file or folder to run instead of the domain's (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--plot", action="store_true",
        help="scenarios: also sweep the fault rate and write scorecard.png (with no --suite, "
        "runs the scenarios suite only; KEEL_EVAL_SWEEP_K seeds per point, default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--model", metavar="NAME",
        help="scenarios: run Keel's model planner and both baselines on this real model, at "
        "OPENAI_BASE_URL (an OpenAI-compatible server) or OpenAI (OPENAI_API_KEY); one of them "
        "must be set. Runs the scenarios suite only, k=1 unless --k",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", action="append", metavar="NAME",
        help="with --model: run only this scenario (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, metavar="N", help="with --model: run only the first N scenarios"
    )
    parser.add_argument(
        "--agentdojo-suite", action="append", metavar="NAME",
        help="agentdojo: an AgentDojo suite to run (repeatable; default: banking, slack, travel; "
        "any installed suite by name)",
    )  # fmt: skip
    parser.add_argument(
        "--attack", metavar="NAME",
        help="agentdojo: an AgentDojo attack by name (default: important_instructions)",
    )  # fmt: skip
    parser.add_argument(
        "--reviewer", action="append", choices=["approve_all", "approve_unflagged", "reject_all"],
        help="agentdojo: who answers the approvals (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument(
        "--without-screen", action="store_true",
        help="agentdojo: an ablation: the injection screen finds nothing in outside text, so "
        "every attack's text reaches the model (what structure alone stops)",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="DIR",
        help="where the scorecard (scorecard.json, scorecard.md, scorecard.png), the "
        "compounding curve (compounding.json, .md, .png), the hostile suite's figures "
        "(hostile.json, .md), the budgets eval's (budgets-eval.json, .md) or AgentDojo's "
        "(agentdojo-figures.json, .md; agentdojo-without-screen.* with --without-screen) and the "
        "other suites' (eval-SUITE.json, .md: faults, retrieval, screening, attacks, record, "
        "crashes) are written (default: KEEL_HOME/scorecard, KEEL_HOME/compounding, "
        "KEEL_HOME/hostile, KEEL_HOME/budgets, KEEL_HOME/agentdojo; with --model, "
        "KEEL_HOME/scorecard-real)",
    )  # fmt: skip


def _scenario_paths(args: argparse.Namespace) -> list[Path]:
    missing = [p for p in args.scenarios if not Path(p).exists()]
    if missing:
        raise BadRequest(f"--scenarios: no such file or folder: {', '.join(missing)}")
    return [Path(p).resolve() for p in args.scenarios]


def _command(args: argparse.Namespace, domain: str) -> str:
    """The ``keel eval`` command line that wrote a scorecard, from the options that shape it
    (and the domain, when it is not the default one)."""
    from keel.settings import DEFAULT_DOMAIN

    words = [f"KEEL_DOMAIN={domain} keel eval" if domain != DEFAULT_DOMAIN else "keel eval"]
    words += [f"--suite {suite}" for suite in args.suite or []]
    words += [f"--scenarios {path}" for path in args.scenarios or []]
    words += [f"--scenario {name}" for name in args.scenario or []]
    for flag, value in (("--model", args.model), ("--k", args.k), ("--limit", args.limit)):
        if value is not None:
            words.append(f"{flag} {value}")
    words += ["--plot"] if args.plot else []
    words += [f"--out {args.out}"] if args.out else []
    return " ".join(words)


def _eval(args: argparse.Namespace, settings: Settings) -> Result:
    """Run the suites; the scenarios' scorecard is also written as JSON and Markdown (and PNG)."""
    from evals.options import EvalOptions
    from evals.runner import run_suites
    from evals.scorecard import markdown, write_scorecard

    if args.k is not None and args.k < 1:
        raise BadRequest("--k must be at least 1")
    if "agentdojo" in (args.suite or []):
        return _eval_agentdojo(args, settings)
    if any(getattr(args, option) for option in AGENTDOJO_ONLY):
        raise BadRequest(
            "--agentdojo-suite, --attack, --reviewer and --without-screen go with --suite agentdojo"
        )
    if args.model is not None:
        return _eval_real_model(args, settings)
    if args.scenario or args.limit is not None:
        raise BadRequest("--scenario and --limit go with --model (the real-model scorecard)")
    asked: dict[str, Any] = {"plot": args.plot or None, "k": args.k, "compounding_k": args.k}
    if args.runs is not None:
        if args.runs < 1:
            raise BadRequest("--runs must be at least 1")
        asked["compounding_runs"] = args.runs
    if args.out:
        asked["out"] = Path(args.out)
    if args.engine:
        if "budgets" not in (args.suite or []):
            raise BadRequest("--engine goes with --suite budgets")
        asked["budgets_engine"] = True
    if args.every is not None and args.every < 1:
        raise BadRequest("--every must be at least 1")
    if args.jobs is not None and not 1 <= args.jobs <= 16:
        raise BadRequest("--jobs must be between 1 and 16")
    asked |= {"crash_backends": args.backend, "crash_requests": args.request,
              "crash_every": args.every, "crash_jobs": args.jobs}  # fmt: skip
    if args.scenarios:
        asked["scenarios"] = _scenario_paths(args)
    # What no flag says comes from KEEL_EVAL_* (the options' defaults).
    options = EvalOptions(**{name: value for name, value in asked.items() if value is not None})
    suites = args.suite or (["scenarios"] if args.plot else None)
    results = run_suites(suites, settings, options=options, progress=sys.stderr.isatty())
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
        card["written"] = write_scorecard(card, folder, command=_command(args, settings.domain))
        if not args.json:
            print(markdown(card))
            print(f"written: {', '.join(card['written'].values())}")
            results = {name: r for name, r in results.items() if name != "scenarios"}
            if not results:
                return None
    return _report(args, results, asked=suites)


def _curve_text(curve: dict[str, Any]) -> str:
    from evals.compounding import markdown

    return markdown(curve)


def _hostile_text(report: dict[str, Any]) -> str:
    from evals.hostile import table

    return table(report)


def _eval_agentdojo(args: argparse.Namespace, settings: Settings) -> Result:
    """AgentDojo's suites (``--suite agentdojo``, alone): scores per suite, agent and reviewer."""
    from evals.agentdojo_eval import markdown
    from evals.runner import run_agentdojo

    if args.suite != ["agentdojo"]:
        raise BadRequest("--suite agentdojo runs alone (it has options of its own)")
    results = run_agentdojo(
        settings, suites=args.agentdojo_suite, attack=args.attack, reviewers=args.reviewer,
        model=args.model, limit=args.limit, progress=sys.stderr.isatty(),
        screen=not args.without_screen, out=Path(args.out) if args.out else None,
    )  # fmt: skip
    if args.json:
        return results
    print(markdown(results))
    print(f"written: {', '.join(results['written'].values())}")
    return None


def _eval_real_model(args: argparse.Namespace, settings: Settings) -> Result:
    """The scenarios' scorecard with every model decision made by a real model (--model)."""
    from evals.real_model import DEFAULT_K, RealModel, real_markdown, run_real_scorecard
    from evals.scorecard import write_scorecard

    if args.suite and args.suite != ["scenarios"]:
        raise BadRequest("--model runs the scenarios suite only: --suite scenarios --model NAME")
    if args.plot:
        raise BadRequest("--plot sweeps tool faults with the scripted model; not with --model")
    model = RealModel.from_settings(settings, args.model)
    card = run_real_scorecard(
        settings,
        model,
        k=args.k or DEFAULT_K,
        paths=_scenario_paths(args) if args.scenarios else None,
        names=args.scenario or [],
        limit=args.limit,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    folder = Path(args.out) if args.out else settings.home / "scorecard-real"
    card["written"] = write_scorecard(
        card,
        folder,
        render=real_markdown,
        stem="scorecard-real",
        command=_command(args, settings.domain),
    )
    if args.json:
        return card
    print(real_markdown(card))
    print(f"written: {', '.join(card['written'].values())}")
    return None


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only", action="append", help="one benchmark (repeatable; default: all of them)"
    )
    parser.add_argument(
        "--out", metavar="DIR",
        help="also write the figures' page into DIR (benchmarks-figures.md, .json; `--out docs` "
        "for the committed one): a bench run replaces its section, the others are kept",
    )  # fmt: skip


def _bench(args: argparse.Namespace, settings: Settings) -> Result:
    from evals.bench import measured_figures, run_benches, summary_table, write_bench_page

    results = run_benches(args.only, settings, progress=sys.stderr.isatty())
    if args.out:
        write_bench_page(results["benches"] if args.only is None else results, Path(args.out))
    if args.only is None and not args.json:
        print(summary_table(results["summary"]) + "\n\ndetails:")
        results = results["benches"]
    elif not args.json and measured_figures(results):
        print(summary_table(measured_figures(results)) + "\n\ndetails:")
    return _report(args, results, asked=args.only)


def _report(
    args: argparse.Namespace, results: dict[str, Any], *, asked: list[str] | None
) -> Result:
    """Scores or figures: one asked for prints bare, several print keyed by name."""
    if asked and len(results) == 1:
        results = next(iter(results.values()))
    if not args.json:
        print(json.dumps(results, indent=2))
        return None
    return results


EVAL = Verb("eval", "run eval suites and print scores", _eval, _eval_arguments)
BENCH = Verb(
    "bench",
    "run benchmarks and print numbers (all of them: the headline figures against their targets "
    "first)",
    _bench,
    _bench_arguments,
)
