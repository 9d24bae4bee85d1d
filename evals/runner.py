"""The one eval runner: a registry of suites, each returning a JSON-able scorecard."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from evals.options import EvalOptions
from keel.errors import BadRequest
from keel.settings import Settings

Suite = Callable[[Settings, bool], dict[str, Any]]
"""A bench (``evals.bench``): the settings, whether to show progress; its figures."""
EvalSuite = Callable[[Settings, EvalOptions, bool], dict[str, Any]]
"""An eval suite: the settings of the Keel it measures, the eval's options, progress; scores."""


def _retrieval(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.retrieval_eval import run_retrieval_eval

    scores = run_retrieval_eval(settings, progress=progress)
    # create_agent brings no retrieval of its own: a retrieval tool for either baseline is plain
    # similarity search, so the middleware baseline scores what the plain one does.
    return scores | {"middleware": scores["plain"]}


def _faults(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.faults_eval import run_faults_eval

    return run_faults_eval(settings, runs=options.runs, progress=progress)


def _attacks(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.attacks_eval import run_attacks_eval

    return run_attacks_eval(settings, progress=progress)


def _record(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.record_eval import run_record_eval

    counts = run_record_eval(settings, progress=progress)
    keel = {k: counts[k] for k in ("runs", "tool_calls", "tool_calls_recorded", "replayed",
                                   "replayed_same", "record_complete", "replay_rate")}  # fmt: skip
    # Neither baseline keeps a record of its own to replay (LangSmith traces, where configured,
    # are not re-executable): nothing of theirs is recorded or replayed.
    none = {"recorded": False, "replayable": False, "replayed_same": 0}
    return counts | {"keel": keel, "plain": none, "middleware": none}


def _scenarios(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.scorecard import run_scorecard

    return run_scorecard(
        settings,
        k=options.k,
        paths=options.scenarios or None,
        sweep=options.plot,
        sweep_k=options.sweep_k,
        progress=progress,
    )


def _compounding(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.compounding import run_compounding, write_curve

    curve = run_compounding(
        settings,
        runs=options.compounding_runs,
        k=options.compounding_k,
        progress=progress,
    )
    command = (
        f"keel eval --suite compounding --runs {options.compounding_runs} --k "
        f"{options.compounding_k}" + (f" --out {options.out}" if options.out else "")
    )
    curve["written"] = write_curve(curve, options.out or settings.home / "compounding", command)
    return curve


def _screening(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.screening_eval import run_screening_eval

    return run_screening_eval(settings, progress=progress)


def _crashes(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.crash_sweep import run_crash_sweep

    return run_crash_sweep(
        backends=options.crash_backends or None,
        requests=options.crash_requests or None,
        every=options.crash_every,
        jobs=options.crash_jobs,
        progress=progress,
        log=settings.home / "crash-sweep.log",
    )


def _budgets(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.budgets_eval import run_budgets_eval, write_budgets_eval

    result = run_budgets_eval(settings, progress=progress)
    if options.budgets_engine:
        from evals.budgets_engine import run_on_engine

        result["engine"] = run_on_engine(progress=progress)
    result["written"] = write_budgets_eval(result, options.out or settings.home / "budgets")
    return result


def _hostile(settings: Settings, options: EvalOptions, progress: bool) -> dict[str, Any]:
    from evals.artifacts import write_artifacts
    from evals.hostile import run_hostile_eval
    from evals.hostile.play import markdown

    report = run_hostile_eval(settings, progress=progress)
    folder = options.out or settings.home / "hostile"
    report["written"] = write_artifacts(folder, "hostile", report, markdown(report))
    return report


def run_agentdojo(
    settings: Settings,
    *,
    suites: list[str] | None,
    attack: str | None,
    reviewers: list[str] | None,
    model: str | None,
    limit: int | None,
    progress: bool,
    screen: bool = True,
    out: Path | None = None,
) -> dict[str, Any]:
    """``keel eval --suite agentdojo``: AgentDojo's suites through the domain seam, judged by
    AgentDojo's own checkers (``evals.agentdojo_eval``). Not in ``SUITES``: it needs options of
    its own and measures AgentDojo's domains, whatever ``KEEL_DOMAIN`` names.

    The figures are written into ``out`` (default ``KEEL_HOME/agentdojo``) as JSON and as a page,
    ``agentdojo-figures.md`` (``agentdojo-without-screen.md`` for the ablation); ``--out docs``
    writes the committed pages."""
    import time

    from agents.models import chat_model_for
    from evals.agentdojo_eval import (
        DEFAULT_ATTACK,
        DEFAULT_SUITES,
        PAGES,
        REVIEWERS,
        Reviewer,
        markdown,
        run_agentdojo_eval,
    )
    from evals.artifacts import write_artifacts
    from evals.real_model import RealModel

    unknown = [r for r in reviewers or [] if r not in REVIEWERS]
    if unknown:
        raise BadRequest(f"--reviewer: unknown {unknown}; known: {list(REVIEWERS)}")
    if limit is not None and limit < 1:
        raise BadRequest("--limit must be at least 1")
    chosen: list[Reviewer] = [r for r in REVIEWERS if r in (reviewers or REVIEWERS)]
    chat = None
    if model is not None:
        chat = chat_model_for(settings, RealModel.from_settings(settings, model).name)
    started = time.monotonic()
    report = run_agentdojo_eval(
        settings, suites=suites or list(DEFAULT_SUITES), attack=attack or DEFAULT_ATTACK,
        reviewers=chosen, model=chat, limit=limit, progress=progress, screen=screen,
    )  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    folder = out or settings.home / "agentdojo"
    report["written"] = write_artifacts(folder, PAGES[screen], report, markdown(report))
    return report


SUITES: dict[str, EvalSuite] = {
    "compounding": _compounding,
    "screening": _screening,
    "retrieval": _retrieval,
    "faults": _faults,
    "attacks": _attacks,
    "record": _record,
    "scenarios": _scenarios,
    "crashes": _crashes,
    "budgets": _budgets,
    "hostile": _hostile,
}


class Page(NamedTuple):
    """A suite whose figures ``keel eval --suite NAME --out DIR`` writes as a page of its own."""

    title: str
    source: str
    intro: str
    scope: Callable[[Mapping[str, Any]], str] | None = None
    """What part of the suite this run covered, when a run may cover part of it."""
    summary: Callable[[Mapping[str, Any]], list[str]] | None = None
    """A table to read first, before every figure (Markdown lines)."""


FAULT_COLUMNS = (
    "runs",
    "success_rate",
    "wrong_irreversible",
    "duplicate_irreversible",
    "escalated",
)


def _by_profile(result: Mapping[str, Any]) -> list[str]:
    """The faults eval at a glance: one row per profile and agent.

    Example:
        >>> _by_profile({"keel": {"outage": {"runs": 3, "success_rate": 1.0}}})[2]
        '| `outage` | keel | 3 | 1.0 |  |  |  |'
    """
    agents = [a for a in ("keel", "plain", "middleware") if isinstance(result.get(a), Mapping)]
    profiles = list(
        dict.fromkeys(p for a in agents for p, row in result[a].items() if isinstance(row, Mapping))
    )
    lines = [
        "| profile | agent | " + " | ".join(FAULT_COLUMNS) + " |",
        "|---|---|" + "---|" * len(FAULT_COLUMNS),
    ]
    for profile in profiles:
        for agent in agents:
            row = result[agent].get(profile, {})
            cells = " | ".join(str(row.get(column, "")) for column in FAULT_COLUMNS)
            lines.append(f"| `{profile}` | {agent} | {cells} |")
    return lines


def ordinal(n: int) -> str:
    """``n`` as an English ordinal.

    Example:
        >>> [ordinal(n) for n in (2, 3, 10, 11, 21, 112)]
        ['2nd', '3rd', '10th', '11th', '21st', '112th']
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _swept(result: Mapping[str, Any]) -> str:
    backends = [b for b in ("sqlite", "postgres") if b in result]
    every = result.get("every", 1)
    stride = (
        "every boundary" if every == 1 else f"every {ordinal(every)} boundary (`--every {every}`)"
    )
    return f"Swept: {', '.join(backends)}; {stride}."


PAGES: dict[str, Page] = {
    "faults": Page(
        "Resilient tools: the faults eval's figures",
        "evals/faults_eval.py",
        "Each fault profile of the domain, Keel beside `create_agent` with and without its "
        "middleware, the same seeded faults: [Resilient tools](resilience.md).",
        summary=_by_profile,
    ),
    "retrieval": Page(
        "Retrieval: the eval's figures",
        "evals/retrieval_eval.py",
        "Curated retrieval beside plain similarity on the domain's questions: "
        "[Retrieval and context](retrieval.md).",
    ),
    "screening": Page(
        "The injection screen: the eval's figures",
        "evals/screening_eval.py",
        "The outside-text screen on public injection corpora and Keel's own: "
        "[Retrieval and context](retrieval.md#what-the-screen-catches-and-what-stands-behind-it).",
    ),
    "attacks": Page(
        "Attacks: the eval's figures",
        "evals/attacks_eval.py",
        "The domain's `attacks.yaml`, each attack judged on the backend: "
        "[Approvals and permissions](approvals-and-permissions.md).",
    ),
    "record": Page(
        "The flight record: the eval's figures",
        "evals/record_eval.py",
        "Every demo request under every fault profile, recorded and replayed: "
        "[Observability](observability.md).",
    ),
    "crashes": Page(
        "Crash consistency: the sweep's figures",
        "evals/crash_sweep.py",
        "A worker killed at each durable write boundary, then recovered: "
        "[Crash consistency](crash-consistency.md).",
        _swept,
    ),
}
"""The suites with no page writer of their own (scenarios, compounding, hostile and budgets have
theirs): each page is ``eval-SUITE.md`` (``eval-SUITE-DOMAIN.md`` for a domain other than the
support desk) beside its JSON."""


def write_suite_page(
    name: str, result: dict[str, Any], folder: Path, domain_setting: str
) -> dict[str, str]:
    """Write one suite's figures as ``eval-NAME[-DOMAIN].{json,md}`` into ``folder``
    (``domain_setting``: the ``KEEL_DOMAIN`` that measured them, named in the command)."""
    from evals.artifacts import figures_page, write_artifacts

    page = PAGES[name]
    domain = result.get("domain", "support_desk")
    stem = f"eval-{name}" if domain == "support_desk" else f"eval-{name}-{domain}"
    command = f"keel eval --suite {name} --out docs"
    if domain != "support_desk":
        command = f"KEEL_DOMAIN={domain_setting} {command}"
    intro = f"Domain: `{domain}`. {page.intro}"
    if page.scope is not None:
        intro += f" {page.scope(result)}"
    figures = {key: value for key, value in result.items() if key != "written"}
    markdown = figures_page(page.title, command, page.source, intro, figures)
    if page.summary is not None:
        head, _, rest = markdown.partition("\n| figure | value |")
        markdown = head + "\n" + "\n".join(page.summary(figures)) + "\n\n## Every figure\n"
        markdown += "\n| figure | value |" + rest
    return write_artifacts(folder, stem, figures, markdown)


def known(registry: Mapping[str, object], names: list[str] | None, kind: str) -> list[str]:
    """The names asked for (all when None), an unknown one refused before anything runs."""
    chosen = names or sorted(registry)
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise BadRequest(f"unknown {kind}(s) {unknown}; known: {sorted(registry)}")
    return chosen


def run_named(
    registry: Mapping[str, Suite],
    names: list[str] | None,
    settings: Settings,
    *,
    progress: bool,
    kind: str = "suite",
) -> dict[str, Any]:
    """Run the named entries of a registry (all when None); an unknown name is refused first."""
    return {name: registry[name](settings, progress) for name in known(registry, names, kind)}


SUPPORT_DESK_ONLY = {
    "compounding": "its workflows are the support desk's requests, judged on its records",
    "crashes": "its sweep drives the support desk's four acting requests",
    "budgets": "its threads are the support desk's duplicate-charge refund",
    "hostile": "its attacks act on the support desk's refunds, e-mails and tickets",
}
"""Suites that measure the support desk and no other domain yet, and why. The retrieval, faults,
attacks, record, scenarios and screening suites run on whatever domain ``KEEL_DOMAIN`` names (its
corpus, questions, scenarios, fault profiles, ``attacks.yaml`` and ``record.yaml``)."""


LONG = {
    "crashes": "a kill-point sweep of every durable boundary, about an hour on 2 cores; run it "
    "with --suite crashes (--every K for a strided one) or --suite all",
}
"""Suites left out when no suite is named, and why: each is listed under ``not_run``."""


def run_suites(
    names: list[str] | None,
    settings: Settings,
    *,
    progress: bool,
    options: EvalOptions | None = None,
) -> dict[str, Any]:
    """Run the named eval suites, each result saying which domain it measured.

    No names: every suite but the long ones (``LONG``); ``["all"]``: every suite. For a domain
    other than the support desk, a suite that can only judge the support desk is refused when
    named, and listed under ``not_run`` with the reason when all suites are asked for: it is never
    run against the wrong backend, and never left out silently. A long suite left out by default
    is listed there too.
    """
    from graph.domain import load_domain

    domain = load_domain(settings.domain).name
    if names and "all" in names and names != ["all"]:
        raise BadRequest("--suite all runs every suite: name it alone")
    every = names is None or names == ["all"]
    chosen = known(SUITES, None if every else names, "suite")
    bound = [n for n in chosen if n in SUPPORT_DESK_ONLY] if domain != "support_desk" else []
    if bound and not every:
        raise BadRequest(
            f"the {', '.join(bound)} suite(s) measure the support desk only "
            f"({'; '.join(SUPPORT_DESK_ONLY[n] for n in bound)}); KEEL_DOMAIN={settings.domain} "
            f"can run: {', '.join(n for n in sorted(SUITES) if n not in SUPPORT_DESK_ONLY)}"
        )
    long = [n for n in chosen if n in LONG and n not in bound] if names is None else []
    run = [n for n in chosen if n not in bound and n not in long]
    options = options if options is not None else EvalOptions()
    results = {name: SUITES[name](settings, options, progress) for name in run}
    out: dict[str, Any] = {name: {"domain": domain, **r} for name, r in results.items()}
    if options.out is not None:
        for name in set(out) & set(PAGES):
            out[name]["written"] = write_suite_page(name, out[name], options.out, settings.domain)
    not_run = {n: f"{SUPPORT_DESK_ONLY[n]}, not {domain}'s" for n in bound}
    not_run |= {n: LONG[n] for n in long}
    if not_run:
        out["not_run"] = not_run
    return out
