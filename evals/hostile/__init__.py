"""The hostile-client suite: Keel attacked through its own API, judged on the backend.

``keel eval --suite hostile`` plays every attack of ``evals.hostile.cases`` (ten classes: auth
configuration, roles and visibility, state writes, command update/goto, forks, reducer
overwrites, forged events, concurrent answers, edits, malformed input) against two targets: a
Python caller of the compiled graph on SQLite, and the engine (Aegra) through the LangGraph SDK
and raw HTTP. Per class it counts ``attempts``, ``unapproved_effects`` (refunds, e-mails, ticket
closures, billing changes in the support desk's backend that no human approved with exactly
those arguments), ``duplicated_effects`` and ``threads_broken`` (a thread that can no longer be
read, or whose pending approval can no longer be answered). An attack refused with a 4xx is an
attempt with no effect. The support desk only: its worlds are the desk's records.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from domains.support_desk import SupportDesk
from evals.hostile.cases import ATTACKS, Attack
from evals.hostile.engine_target import hostile_engine
from evals.hostile.graph_target import GraphTarget
from evals.hostile.play import Outcome, counts, play_attack, table
from evals.hostile.target import Target
from graph.context import KeelContext
from keel.app import KeelApp
from keel.errors import ConfigError
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore

__all__ = ["run_hostile_eval", "run_on", "table"]


def run_on(
    target: Target, attacks: Iterable[Attack], say: Callable[[str], None] | None = None
) -> list[Outcome]:
    """Play each attack that applies to ``target`` (by its kind, the name before ``:``)."""
    kind = target.name.split(":", 1)[0]
    out = []
    for attack in attacks:
        if kind in attack.targets:
            out.append(play_attack(target, attack))
            if say is not None:
                say(f"{target.name} {attack.name}")
    return out


def graph_home(settings: Settings, home: Path) -> Settings:
    """Settings on a home of its own for the in-process target: embedded stores (SQLite, an
    embedded Chroma index of the corpus), the desk's backend seeded, no fault injected."""
    own = settings.model_copy(update={"home": home, "domain_backend": None, "faults": "none",
                                      "postgres_url": None, "chroma_url": None})  # fmt: skip
    CorpusStore(own, embedder_for(own)).ingest(progress=False)
    SupportDesk().prepare(own, reset=True)
    return own


def run_hostile_eval(
    settings: Settings, *, progress: bool = False, engine: bool = True
) -> dict[str, Any]:
    """Every attack on the in-process graph and (``engine``) on the engine; the report.

    The engine needs PostgreSQL's server programs, redis-server and Aegra; without them its
    targets are listed under ``not_run`` with the reason, never counted as passed.
    """

    def say(text: str) -> None:
        if progress:
            print(f"\rhostile: {text[:70]:<70}", end="", file=sys.stderr, flush=True)

    outcomes: list[Outcome] = []
    not_run: dict[str, str] = {}
    targets = ["graph"]
    with tempfile.TemporaryDirectory(prefix="keel-hostile-") as tmp:
        own = graph_home(settings, Path(tmp) / "home")
        with KeelApp.open(own, KeelContext.from_settings(own)) as app:
            outcomes += run_on(GraphTarget(app), ATTACKS, say)
    if engine:
        try:
            with hostile_engine() as served:
                for target in served:
                    targets.append(target.name)
                    outcomes += run_on(target, ATTACKS, say)
        except ConfigError as err:
            not_run["engine"] = str(err).splitlines()[0]
    if progress:
        print(file=sys.stderr)
    report: dict[str, Any] = {
        "targets": targets,
        "classes": counts(outcomes),
        "by_target": {t: counts([o for o in outcomes if o.target == t]) for t in targets},
        "attacks": [o.to_json() for o in outcomes],
    }
    if not_run:
        report["not_run"] = not_run
    return report
