"""The eval runner: the retrieval suite's targets, and clear errors for bad suites and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.retrieval_eval import load_questions, run_retrieval_eval
from evals.runner import run_suites
from keel.errors import BadRequest
from keel.settings import Settings


def test_curated_retrieval_meets_its_targets_against_plain_similarity(settings: Settings) -> None:
    scores = run_retrieval_eval(settings)
    assert scores["questions"] >= 60 and scores["traps"] >= 10
    assert scores["keel"]["bad_chunk_rate"] == 0.0
    assert scores["plain"]["bad_chunk_rate"] > 0.5  # the traps really are traps
    assert scores["keel"]["recall_at_5"] >= scores["plain"]["recall_at_5"]


def test_an_unknown_suite_is_refused_before_anything_runs(settings: Settings) -> None:
    with pytest.raises(BadRequest, match="unknown suite"):
        run_suites(["retrieval", "vibes"], settings, progress=False)


def test_a_malformed_question_file_names_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "questions.yaml"
    bad.write_text("version: 1\nquestions:\n  - id: q1\n    question: hi there\n")
    with pytest.raises(BadRequest, match=r"questions\.yaml"):
        load_questions(bad)


def test_the_checkpoint_bench_says_why_when_postgres_is_not_there(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.servers
    from evals.bench_checkpoint import bench_checkpoint

    monkeypatch.setattr(keel.servers, "postgres_bin", lambda: None)
    figures = bench_checkpoint(settings, writes=5)
    assert figures["sqlite"]["put_p50_ms"] > 0
    assert "make postgres" in figures["postgres"]["skipped"]


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two stand-in suites, ``faults`` and the long ``crashes``: the names of those that ran."""
    import evals.runner

    names: list[str] = []

    def suite(name: str) -> evals.runner.EvalSuite:
        return lambda settings, options, progress: names.append(name) or {"score": 1.0}

    monkeypatch.setattr(evals.runner, "SUITES", {n: suite(n) for n in ("faults", "crashes")})
    return names


def test_each_suite_says_its_domain_and_none_judges_another_domain_with_the_wrong_backend(
    tmp_path: Path, ran: list[str]
) -> None:
    incident = Settings(home=tmp_path, domain="domains.incident_desk:IncidentDesk", _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(BadRequest, match=r"crashes suite\(s\) measure the support desk only"):
        run_suites(["crashes"], incident, progress=False)
    assert ran == []
    results = run_suites(None, incident, progress=False)
    assert results["faults"] == {"domain": "incident_desk", "score": 1.0}
    assert results["not_run"] == {
        "crashes": "its sweep drives the support desk's four acting requests, not incident_desk's"
    } and ran == ["faults"]
    assert set(run_suites(["all"], incident, progress=False)["not_run"]) == {"crashes"}
    desk = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert run_suites(["crashes"], desk, progress=False)["crashes"]["domain"] == "support_desk"


def test_no_suite_named_runs_all_but_the_long_sweep_and_says_so(
    tmp_path: Path, ran: list[str]
) -> None:
    desk = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    results = run_suites(None, desk, progress=False)
    assert ran == ["faults"] and "--suite crashes" in results["not_run"]["crashes"]
    ran.clear()
    assert "not_run" not in run_suites(["all"], desk, progress=False)
    assert sorted(ran) == ["crashes", "faults"]
    with pytest.raises(BadRequest, match="name it alone"):
        run_suites(["all", "faults"], desk, progress=False)


def test_the_domain_is_chosen_on_the_command_line_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keel.cli import main

    monkeypatch.setenv("KEEL_HOME", str(tmp_path))
    monkeypatch.delenv("KEEL_DOMAIN", raising=False)
    incident = "domains.incident_desk:IncidentDesk"
    assert main(["domain", "list", "--json", "--domain", incident]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["domain"] == "incident_desk" and "finish-rollbacks" in listed["verbs"]
    assert main(["eval", "--suite", "crashes", "--domain", incident]) == 2
    err = capsys.readouterr().err
    assert "crashes suite(s) measure the support desk only" in err and "attacks" in err
    assert main(["eval", "--suite", "faults", "--domain", "nowhere:Thing"]) == 2
    assert "no module 'nowhere'" in capsys.readouterr().err
