"""Query latency of curated retrieval at scale, in embedded Chroma, on this machine.

The index is built in a temporary directory from the demo corpus plus deterministic synthetic
variants (recombined sentences, other figures and names, every trust tier, some superseded), so
it looks like a larger knowledge base. Each timed query includes embedding the question.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Literal

from graph.state import TrustTier
from keel.settings import Settings
from retrieval.corpus import Chunk, SourceEntry, load_corpus
from retrieval.embeddings import embedder_for
from retrieval.store import BATCH, CorpusStore, _metadata

QUESTIONS = [
    "What is our refund window?",
    "A customer was charged twice, how do I refund the duplicate?",
    "How do I change a customer's billing e-mail?",
    "How do I close a ticket and tell the customer?",
    "How long do we keep customer records?",
    "How fast do we answer a new ticket?",
    "How does a customer reset their password?",
    "Which payment methods do we accept?",
    "Can a customer cancel at any time?",
    "Who approves refunds above 500 EUR?",
    "When are invoices sent?",
    "How long is a reset link valid?",
]
TIERS: list[TrustTier] = ["official", "reviewed", "wiki", "untrusted"]
KINDS: list[Literal["policy", "faq", "note"]] = ["policy", "faq", "note"]


def _synthetic(seed_chunks: list[Chunk], n: int, rng: random.Random) -> list[Chunk]:
    sentences = [s.strip() for c in seed_chunks for s in c.text.split(". ") if len(s) > 20]
    names = ["Ada", "Grace", "Alan", "Katherine", "Edsger", "Barbara", "Donald", "Frances"]
    out = []
    for i in range(n):
        picked = rng.sample(sentences, k=min(3, len(sentences)))
        text = ". ".join(picked).replace("30", str(rng.randint(2, 90)))
        text = f"{text}. Noted for {rng.choice(names)} in case {rng.randint(1000, 9999)}."
        source = SourceEntry(
            id=f"synthetic-{i // 4:05d}", path="synthetic.md", title=f"Synthetic note {i // 4}",
            kind=rng.choice(KINDS), trust_tier=rng.choice(TIERS),
            owner="bench", effective_date=date(2025, 1, 1), version="1",
        )  # fmt: skip
        superseded = f"synthetic-{i // 4 + 1:05d}" if rng.random() < 0.1 else None
        out.append(Chunk(chunk_id=f"{source.id}:{i}", source=source, section="Notes",
                         text=text, superseded_by=superseded))  # fmt: skip
    return out


def _ms(samples: list[float], q: float) -> float:
    return round(statistics.quantiles(samples, n=100)[int(q * 100) - 1] * 1000, 2)


def bench_retrieval(
    settings: Settings,
    *,
    chunks: int = 10_000,
    queries: int = 200,
    k: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Build a ``chunks``-chunk index, then time ``queries`` curated and plain queries."""
    rng = random.Random(7)
    _, corpus = load_corpus(settings.corpus_dir)
    rows = (corpus + _synthetic(corpus, max(0, chunks - len(corpus)), rng))[:chunks]
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        local = settings.model_copy(update={"home": Path(tmp)})
        store = CorpusStore(local, embedder_for(local))
        collection: Any = store._collection(create=True)
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            collection.upsert(
                ids=[c.chunk_id for c in batch],
                embeddings=store.embedder.embed([c.text for c in batch]),
                documents=[c.text for c in batch],
                metadatas=[_metadata(c) for c in batch],
            )
            if progress:
                print(
                    f"\rbuilding index: {start + len(batch)}/{len(rows)}", end="", file=sys.stderr
                )
        build_s = time.perf_counter() - started
        if progress:
            print(file=sys.stderr)
        k = k or settings.retrieval_k
        for question in QUESTIONS[:5]:
            store.search(question, k)
        curated, plain = [], []
        for i in range(queries):
            question = QUESTIONS[i % len(QUESTIONS)]
            t = time.perf_counter()
            store.search(question, k)
            curated.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.candidates(question, k)
            plain.append(time.perf_counter() - t)
        return {
            "chunks": int(collection.count()),
            "queries": queries,
            "search_p50_ms": _ms(curated, 0.50),
            "search_p95_ms": _ms(curated, 0.95),
            "plain_p50_ms": _ms(plain, 0.50),
            "plain_p95_ms": _ms(plain, 0.95),
            "build_s": round(build_s, 1),
        }
