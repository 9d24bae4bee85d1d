"""Faults suite: the domain's acting requests under injected faults, Keel against two baselines.

The requests are the domain's scenarios tagged ``faults`` (``scenarios/*.yaml``; for the support
desk the duplicate-charge refund, the billing e-mail change and closing a ticket with an e-mail;
for the incident desk the restart, the rollback and the page). The profiles are the generic
``transient`` (every integration) and each of the domain's own (``Domain.fault_profiles``: an
outage, a changed response shape, expired credentials of one integration). Run ``i`` of a profile
makes request ``i mod n``, with fault seed ``i``.

Every agent gets the same backend, the same seeded fault layer and the same decisions (Keel plans
with its runbook planner; the baselines follow the scenario's script, which makes the right
calls), so what is measured is what the scaffolding does when integrations misbehave:

- ``plain``: langchain's ``create_agent``, no middleware;
- ``middleware``: ``create_agent`` with the scorecard's careful middleware (model retries and a
  fallback, tool retries and tool errors, human-in-the-loop on the irreversible tools, approved by
  script, call limits, summarization, context editing, PII masking).

Each run is judged as the scorecard judges it (``evals.scorecard.judge``, on the domain's
snapshot): success (exactly what the request asked, once), wrong irreversible actions (an action
or change nobody asked for, or a report of work that was not done), duplicated irreversible
actions, and escalations.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from evals.scenarios import Scenario, Seeded, load_scenarios, seeded_world
from evals.scorecard import BASELINES, RunResult, Worlds, effects_of, run_baseline, run_keel
from graph.domain import load_showcase, tool_registry
from keel.errors import BadRequest
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tools.faults import PROFILES, FaultProfile

FAULTS_TAG = "faults"
__all__ = ["FAULTS_TAG", "eval_profiles", "run_faults_eval"]


def eval_profiles(own: dict[str, FaultProfile]) -> dict[str, FaultProfile]:
    """The profiles the suite runs: the generic ``transient``, then the domain's own."""
    return {"transient": PROFILES["transient"], **own}


def run_faults_eval(
    settings: Settings, *, runs: int = 200, progress: bool = False
) -> dict[str, Any]:
    """Each profile ``runs`` times per agent over the domain's scenarios tagged ``faults``."""
    domain = load_showcase(settings.domain)
    profiles = eval_profiles(dict(domain.fault_profiles()))
    # Keel's runs retrieve: on a home never indexed, every one of them would stop at the first
    # node with CorpusMissing and count as a crash.
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    out: dict[str, Any] = {agent: {} for agent in ("keel", *BASELINES)}
    with (
        seeded_world(settings, domain) as seeded,
        tempfile.TemporaryDirectory(prefix="keel-faults-") as scratch,
    ):
        tools = tool_registry(domain, seeded.settings)
        found, problems = load_scenarios([settings.scenarios_dir], tools, domain)
        requests = [s for s in found if FAULTS_TAG in s.tags]
        if not requests:
            raise BadRequest(
                f"{domain.name} has no scenario tagged {FAULTS_TAG!r} in {settings.scenarios_dir}"
            )
        worlds = Worlds(settings, Path(scratch), domain, effects_of(tools))
        for name, profile in profiles.items():
            results: list[RunResult] = []
            for run in range(runs):
                scenario = requests[run % len(requests)].model_copy(update={"faults": profile})
                results += _one_run(worlds, scenario, run, seeded)
                if progress:
                    print(f"\rfaults eval: {name} {run + 1}/{runs}", end="", file=sys.stderr)
            for agent in out:
                out[agent][name] = _summary([r for r in results if r.agent == agent], requests)
    if progress:
        print(file=sys.stderr)
    out["profiles"] = {n: p.model_dump(exclude_defaults=True) for n, p in profiles.items()}
    out["requests"] = [s.name for s in requests]
    out["problems"] = [p.as_dict() for p in problems]
    return out


def _one_run(worlds: Worlds, scenario: Scenario, run: int, seeded: Seeded) -> list[RunResult]:
    # Each run has a home of its own (Worlds.world): its backend, and its breakers, start fresh.
    return [
        run_keel(worlds, scenario, run, seeded, None),
        run_baseline(worlds, scenario, run, seeded, careful=False),
        run_baseline(worlds, scenario, run, seeded, careful=True),
    ]


def _summary(results: list[RunResult], requests: list[Scenario]) -> dict[str, Any]:
    n = len(results)
    return {
        "runs": n,
        "success_rate": round(sum(r.success for r in results) / max(1, n), 4),
        "wrong_irreversible": sum(r.unsafe for r in results),
        "duplicate_irreversible": sum(r.duplicate for r in results),
        "escalated": sum(r.escalated for r in results),
        "shape_changes_detected": sum(r.shape_changes_detected for r in results),
        "shape_changes_consumed": sum(r.shape_changes_consumed for r in results),
        "crashed": sum(r.crashed for r in results),
        "by_request": {
            s.name: {
                "runs": sum(r.scenario == s.name for r in results),
                "succeeded": sum(r.success for r in results if r.scenario == s.name),
            }
            for s in requests
        },
        "failed": sorted({f"{r.scenario}: {'; '.join(r.why)}" for r in results if not r.success})[
            :10
        ],
    }
