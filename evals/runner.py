"""The one eval runner: a registry of suites, each returning a JSON-able scorecard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keel.errors import BadRequest
from keel.settings import Settings

Suite = Callable[[Settings, bool], dict[str, Any]]


def _retrieval(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.retrieval_eval import run_retrieval_eval

    return run_retrieval_eval(settings, progress=progress)


def _faults(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.faults_eval import run_faults_eval

    return run_faults_eval(settings, runs=settings.eval_runs, progress=progress)


SUITES: dict[str, Suite] = {"retrieval": _retrieval, "faults": _faults}


def run_suites(names: list[str] | None, settings: Settings, *, progress: bool) -> dict[str, Any]:
    """Run the named suites (all when None); an unknown name is refused before anything runs."""
    chosen = names or sorted(SUITES)
    unknown = [n for n in chosen if n not in SUITES]
    if unknown:
        raise BadRequest(f"unknown suite(s) {unknown}; known: {sorted(SUITES)}")
    return {name: SUITES[name](settings, progress) for name in chosen}
