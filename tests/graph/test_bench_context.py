"""The context benchmark's behaviour: Keel's prompt stays bounded over 50 steps and keeps the
fact the last step needs, while a message-accumulating agent's prompt grows with every step."""

from __future__ import annotations

from evals.bench_context import bench_context
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore


def test_keel_prompt_stays_bounded_over_fifty_steps(settings: Settings) -> None:
    store = CorpusStore(settings, embedder_for(settings))
    evidence = store.query("refund a duplicate charge and e-mail the customer", 6)
    result = bench_context(settings, evidence)
    keel, plain = result["keel"], result["plain"]
    assert len(keel["prompt_tokens"]) == len(plain["prompt_tokens"]) == 50
    assert result["step50_over_step1"] <= 1.5
    assert max(keel["prompt_tokens"]) <= settings.planner_budget_tokens
    assert keel["last_step_had_refund_id"]
    assert plain["step50"] > 5 * plain["step1"]
    assert result["total_tokens_plain_over_keel"] > 1.0
