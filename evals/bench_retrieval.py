"""Query latency of curated retrieval at scale, in embedded Chroma, on this machine.

The index is built in a temporary directory (never in ``settings.home``) from the demo corpus
plus deterministic synthetic variants: recombined sentences of corpus chunks with other figures
and customer names, every trust tier, some superseded by a newer synthetic source and a few
expired, so the collection looks like a larger knowledge base and curation has real work to do.
Every chunk is embedded for real. Each timed query includes embedding the question.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from graph.state import TrustTier
from keel.settings import Settings
from retrieval.corpus import Chunk, SourceEntry, load_corpus
from retrieval.embeddings import embedder_for
from retrieval.screening import screen
from retrieval.store import BATCH, CorpusStore

SEED = 7
WARMUP = 5
CHUNKS_PER_SOURCE = 4

QUESTIONS = [
    "What is our refund window?",
    "How many days does a customer have to ask for a refund?",
    "A customer was charged twice, how do I refund the duplicate?",
    "Do we need a bank statement before refunding a duplicate charge?",
    "Who approves refunds above 500 EUR?",
    "How long does a refund take to reach the card?",
    "Can a refund be larger than the charge it is made on?",
    "How do I change a customer's billing e-mail?",
    "The customer wants invoices sent to a different e-mail address",
    "How do I close a ticket and tell the customer?",
    "When are invoices sent?",
    "Which payment methods do we accept?",
    "Do we accept SEPA direct debit?",
    "How fast do we answer a new ticket?",
    "When is a ticket escalated to the support lead?",
    "What are the support desk hours?",
    "Is support open on Saturdays?",
    "How long do we keep customer records after the contract ends?",
    "How long must we keep invoices?",
    "A customer asks us to delete their account, how long does it take?",
    "A customer wants a copy of their data, who answers it?",
    "Can I export the customer list to a partner?",
    "How does a customer reset their password?",
    "How long is a password reset link valid?",
    "How do I switch off two-factor authentication for a customer?",
    "What happens after several failed logins?",
    "Can a customer cancel their subscription at any time?",
    "How much do the Starter and Business plans cost?",
    "Does moving from Business to Starter give a refund?",
    "When will the customer's order be shipped and how long does delivery take?",
]
TIERS: list[TrustTier] = ["official", "reviewed", "wiki", "untrusted"]
TIER_WEIGHTS = [3, 3, 2, 1]
KINDS: list[Literal["policy", "faq", "note"]] = ["policy", "faq", "note"]
CUSTOMERS = [
    "Ada Byron", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra",
    "Barbara Liskov", "Donald Knuth", "Frances Allen", "Margaret Hamilton", "John Backus",
    "Radia Perlman", "Ken Thompson", "Hedy Lamarr", "Claude Shannon", "Annie Easley",
]  # fmt: skip
OWNERS = ["finance", "legal", "billing-ops", "customer-success", "support", "community"]

_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CUSTOMER = re.compile(r"\b(?:the|a) customer\b", re.IGNORECASE)


def _sentences(chunk: Chunk) -> list[str]:
    """The body's sentences, without the ``Title - Section:`` prefix every chunk carries."""
    prefix = f"{chunk.source.title} - {chunk.section}: "
    body = chunk.text.removeprefix(prefix) if chunk.section else chunk.text
    return [s.strip() for s in _SENTENCE.split(body) if len(s.strip()) > 20]


def _vary(text: str, rng: random.Random) -> str:
    """Other figures and, sometimes, a named customer instead of "the customer"."""
    text = _NUMBER.sub(lambda m: str(rng.choice([1, 2, 3, 5, 7, 10, 14, 24, 30, 45, 60, 90])), text)
    if rng.random() < 0.5:
        name = rng.choice(CUSTOMERS)
        text = _CUSTOMER.sub(f"customer {name} (C-{rng.randint(1000, 9999)})", text, count=1)
    return text


def _source(n: int, rng: random.Random, sources: int) -> tuple[SourceEntry, str | None]:
    """Synthetic source ``n`` and the newer synthetic source that supersedes it, if any."""
    effective = date(2022, 1, 1) + timedelta(days=rng.randint(0, 4 * 365))
    expires = effective + timedelta(days=rng.randint(30, 365)) if rng.random() < 0.03 else None
    entry = SourceEntry(
        id=f"synthetic-{n:05d}",
        path=f"synthetic/{n:05d}.md",
        title=f"Operations note {n}",
        kind=rng.choice(KINDS),
        trust_tier=rng.choices(TIERS, weights=TIER_WEIGHTS)[0],
        owner=rng.choice(OWNERS),
        effective_date=effective,
        version=str(rng.randint(1, 5)),
        expires=expires,
    )
    newer = n + rng.randint(1, 50)
    superseded_by = f"synthetic-{newer:05d}" if rng.random() < 0.1 and newer < sources else None
    return entry, superseded_by


def synthetic_chunks(seed_chunks: list[Chunk], n: int, rng: random.Random) -> list[Chunk]:
    """``n`` deterministic variants of ``seed_chunks``, ``CHUNKS_PER_SOURCE`` per source."""
    bodies = [(c, _sentences(c)) for c in seed_chunks]
    clean = [(c, s) for c, s in bodies if s and not c.quarantine]
    injected = [(c, s) for c, s in bodies if s and c.quarantine]
    pool = [s for _, sentences in clean for s in sentences]
    sources = -(-n // CHUNKS_PER_SOURCE)
    out: list[Chunk] = []
    source, superseded_by = _source(0, rng, sources)
    for i in range(n):
        if i and i % CHUNKS_PER_SOURCE == 0:
            source, superseded_by = _source(i // CHUNKS_PER_SOURCE, rng, sources)
        # About one chunk in a hundred repeats an injection, as a large wiki would.
        base, own = rng.choice(injected if injected and rng.random() < 0.01 else clean)
        picked = rng.sample(own, k=min(len(own), rng.randint(1, 2)))
        picked += rng.sample(pool, k=rng.randint(0, 2))
        body = _vary(" ".join(picked), rng)
        text = f"{source.title} - {base.section}: {body}" if base.section else body
        digest = hashlib.sha256(f"{i}\n{text}".encode()).hexdigest()[:16]
        out.append(
            Chunk(
                chunk_id=f"{source.id}:{digest}",
                source=source,
                section=base.section,
                text=text,
                superseded_by=superseded_by,
                quarantine=screen(text),
            )
        )
    return out


def _ms(samples: list[float], percent: int) -> float:
    """The ``percent``-th percentile in milliseconds (linear interpolation, like numpy's)."""
    if len(samples) == 1:
        return round(samples[0] * 1000, 2)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return round(cuts[percent - 1] * 1000, 2)


def bench_retrieval(
    settings: Settings,
    *,
    chunks: int = 10_000,
    queries: int = 200,
    k: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Build a ``chunks``-chunk index, then time ``queries`` curated and plain queries.

    ``search_*`` is :meth:`CorpusStore.search` (nearest neighbours, then curation); ``plain_*``
    is :meth:`CorpusStore.candidates` for ``k`` results (nearest neighbours alone). ``build_s``
    is the time to embed and insert every chunk.
    """
    if chunks < 1 or queries < 1:
        raise ValueError("bench_retrieval needs at least one chunk and one query")
    k = k or settings.retrieval_k
    _, corpus = load_corpus(settings.corpus_dir)
    rng = random.Random(SEED)
    rows = (corpus + synthetic_chunks(corpus, max(0, chunks - len(corpus)), rng))[:chunks]
    asked = random.Random(SEED + 1)
    questions = [asked.choice(QUESTIONS) for _ in range(queries)]
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        local = settings.model_copy(update={"home": Path(tmp)})
        store = CorpusStore(local, embedder_for(settings))
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            store.write(batch, store.embedder.embed([c.text for c in batch]))
            if progress:
                done, elapsed = start + len(batch), time.perf_counter() - started
                print(
                    f"\rbuilding index: {done}/{len(rows)} chunks, {elapsed:.0f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        build_s = time.perf_counter() - started
        if progress:
            print(f"\ntiming {queries} curated and {queries} plain queries", file=sys.stderr)
        for question in QUESTIONS[:WARMUP]:
            store.search(question, k)
        curated: list[float] = []
        plain: list[float] = []
        for question in questions:  # interleaved, so drift on the machine hits both alike
            t = time.perf_counter()
            store.search(question, k)
            curated.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.candidates(question, k)
            plain.append(time.perf_counter() - t)
        return {
            "chunks": store.count(),
            "queries": queries,
            "search_p50_ms": _ms(curated, 50),
            "search_p95_ms": _ms(curated, 95),
            "plain_p50_ms": _ms(plain, 50),
            "plain_p95_ms": _ms(plain, 95),
            "build_s": round(build_s, 1),
        }
