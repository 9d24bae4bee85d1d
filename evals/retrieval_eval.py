"""Curated retrieval against plain Chroma similarity, on the same index and embeddings.

For each labelled question: recall@5 (a chunk of a correct source in the top 5), nDCG@10
(binary relevance by source), and whether a bad chunk (superseded, expired, quarantined or
low-trust) is among the ``retrieval_k`` chunks that would reach the planner.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import BadRequest
from keel.settings import Settings
from retrieval.corpus import load_corpus
from retrieval.curation import Candidate, curate
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str = Field(min_length=3)
    sources: list[str] = Field(min_length=1)
    trap: Literal["stale", "low_trust", "injected"] | None = None


class QuestionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    questions: list[Question]


def load_questions(path: Path) -> list[Question]:
    """The retrieval questions of a domain (``retrieval_questions.yaml`` in its folder)."""
    try:
        return QuestionSet.model_validate(yaml.safe_load(path.read_text())).questions
    except (OSError, yaml.YAMLError, ValidationError) as err:
        raise BadRequest(f"{path}: {str(err).splitlines()[0]}") from err


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return 1.0 if set(ranked[:k]) & relevant else 0.0


def ndcg_at(ranked: list[str], relevant: set[str], k: int, available: int) -> float:
    """Binary-relevance nDCG: ``ranked`` holds source ids; ``available`` relevant chunks exist."""
    dcg = sum(1.0 / math.log2(i + 2) for i, s in enumerate(ranked[:k]) if s in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(available, k)))
    return dcg / ideal if ideal else 0.0


def _score(rankings: list[tuple[Question, list[Candidate]]], chunks_per_source: dict[str, int],
           planner_k: int) -> dict[str, float]:  # fmt: skip
    n = len(rankings)
    recall = ndcg = bad = 0.0
    for question, ranked in rankings:
        sources = [c.evidence.source for c in ranked]
        relevant = set(question.sources)
        available = sum(chunks_per_source.get(s, 0) for s in relevant)
        recall += recall_at(sources, relevant, 5)
        ndcg += ndcg_at(sources, relevant, 10, available)
        bad += 1.0 if any(c.bad for c in ranked[:planner_k]) else 0.0
    return {
        "recall_at_5": round(recall / n, 4),
        "ndcg_at_10": round(ndcg / n, 4),
        "bad_chunk_rate": round(bad / n, 4),
    }


def _curated(candidates: list[Candidate]) -> list[Candidate]:
    by_id = {c.evidence.chunk_id: c for c in candidates}
    return [by_id[e.chunk_id] for e in curate(candidates, 10).evidence]


def run_retrieval_eval(settings: Settings, *, progress: bool = False) -> dict[str, Any]:
    questions = load_questions(settings.domain_dir / "retrieval_questions.yaml")
    store = CorpusStore(settings, embedder_for(settings))
    store.ingest(progress=progress)
    _, chunks = load_corpus(settings.corpus_dir)
    per_source: dict[str, int] = {}
    for chunk in chunks:
        per_source[chunk.source.id] = per_source.get(chunk.source.id, 0) + 1
    unknown = sorted({s for q in questions for s in q.sources} - per_source.keys())
    if unknown:
        raise BadRequest(f"questions name sources that are not in the corpus: {unknown}")

    plain: list[tuple[Question, list[Candidate]]] = []
    keel: list[tuple[Question, list[Candidate]]] = []
    hybrid: list[tuple[Question, list[Candidate]]] = []
    for i, question in enumerate(questions):
        candidates = store.candidates(question.question, 40)
        plain.append((question, candidates[:10]))
        keel.append((question, _curated(candidates)))
        hybrid.append((question, _curated(store.candidates(question.question, 40, hybrid=True))))
        if progress:
            print(f"\rretrieval eval: {i + 1}/{len(questions)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    k = settings.retrieval_k
    traps = [q for q in questions if q.trap]
    return {
        "keel": _score(keel, per_source, k),
        "plain": _score(plain, per_source, k),
        "keel_hybrid": _score(hybrid, per_source, k),
        "questions": len(questions),
        "traps": len(traps),
        "planner_k": k,
    }
