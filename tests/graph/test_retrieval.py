"""The Chroma index on the embedded backend: idempotent ingest, provenance, no superseded text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keel.errors import CorpusMissing
from keel.settings import DEMO_CORPUS, Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore


@pytest.fixture
def store(settings: Settings) -> CorpusStore:
    return CorpusStore(settings, embedder_for(settings))


def test_query_carries_provenance_and_drops_superseded_sources(store: CorpusStore) -> None:
    hits = store.query("How many days do customers have to ask for a refund?", 6)
    assert hits and all(h.owner and h.trust_tier and h.effective_date for h in hits)
    assert "refund-policy-v1" not in {h.source for h in hits}
    assert "refund-policy-v2" in {h.source for h in hits}
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_a_changed_document_replaces_its_old_chunks(tmp_path: Path, indexed_home: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(DEMO_CORPUS, corpus)
    home = tmp_path / "home"
    shutil.copytree(indexed_home, home)
    settings = Settings(home=home, corpus_dir=corpus, _env_file=None)  # type: ignore[call-arg]
    store = CorpusStore(settings, embedder_for(settings))
    assert store.ingest(progress=False).added == 0

    doc = corpus / "docs" / "faq-billing.md"
    doc.write_text(doc.read_text().replace("SEPA direct debit", "SEPA and PayPal"))
    report = store.ingest(progress=False)
    assert (report.added, report.removed) == (1, 1)
    hits = store.query("Which payment methods do we accept?", 3)
    assert any("PayPal" in h.text for h in hits)
    assert not any("SEPA direct debit" in h.text for h in hits)


def test_an_index_built_with_other_embeddings_is_refused(settings: Settings) -> None:
    class Other:
        name = "other:model"

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[0.0] * 384 for _ in texts]

    with pytest.raises(CorpusMissing, match="built with local:all-MiniLM-L6-v2"):
        CorpusStore(settings, Other()).query("anything", 3)
