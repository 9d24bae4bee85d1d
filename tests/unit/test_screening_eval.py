"""The screen measured on public attack corpora (installed from PyPI with the evals extra)."""

from __future__ import annotations

from pathlib import Path

from evals.screening_eval import (
    agentdojo_samples,
    aib_samples,
    bastion_samples,
    keel_corpus_samples,
    run_screening_eval,
)
from keel.settings import Settings
from retrieval.screening import screen


def test_the_corpora_load_offline_with_attacks_and_benign_text() -> None:
    dojo = agentdojo_samples()
    families = {s.family for s in dojo if s.attack}
    assert {"important_instructions", "direct", "ignore_previous", "system_message"} <= families
    assert any("iunstructions" in s.text for s in dojo)  # AgentDojo's own text, typo and all
    assert any(not s.attack for s in dojo)
    for samples in (aib_samples(), bastion_samples()):
        assert any(s.attack for s in samples) and any(not s.attack for s in samples)


def test_agentdojo_templates_are_caught_and_the_scores_are_computed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    planted = [s for s in keel_corpus_samples(settings) if s.attack]
    assert planted and all(screen(s.text) for s in planted)
    scores = run_screening_eval(settings)
    assert scores["corpora"]["agentdojo"]["recall"] == 1.0
    assert scores["corpora"]["keel-corpus"]["false_positives"] == 0
    overall = scores["overall"]
    assert overall["false_positive_rate"] < 0.01
    assert 0 < overall["recall"] < 1  # the held-out corpora still get past it: docs/retrieval.md
