"""The Chroma index on the embedded backend: idempotent ingest, provenance, no superseded text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domains.support_desk import CORPUS
from keel.errors import CorpusMissing
from keel.settings import Settings
from retrieval.embeddings import OnnxMiniLM, embedder_for
from retrieval.store import CorpusStore


@pytest.fixture
def store(settings: Settings) -> CorpusStore:
    return CorpusStore(settings, embedder_for(settings))


def test_query_carries_provenance_and_drops_superseded_sources(store: CorpusStore) -> None:
    hits = store.query("How many days do customers have to ask for a refund?", 6)
    assert hits and all(h.owner and h.trust_tier and h.effective_date for h in hits)
    assert "refund-policy-v1" not in {h.source for h in hits}
    assert "refund-policy-v2" in {h.source for h in hits}
    assert hits[0].trust_tier in ("official", "reviewed")


def test_a_changed_document_replaces_its_old_chunks(tmp_path: Path, indexed_home: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
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

    with pytest.raises(CorpusMissing, match="built with local:all-MiniLM-L6-v2-onnx-int8"):
        CorpusStore(settings, Other()).query("anything", 3)


def test_the_torch_backend_is_refused_an_index_the_onnx_default_built(settings: Settings) -> None:
    # The same model in float32 gives other vectors: its name differs, so the index says no
    # before anything is embedded (and so without PyTorch installed).
    torch = settings.model_copy(update={"embedding_backend": "torch"})
    with pytest.raises(CorpusMissing, match="ingest --rebuild") as refused:
        CorpusStore(torch, embedder_for(torch)).search("What is our refund window?", 3)
    assert "built with local:all-MiniLM-L6-v2-onnx-int8" in str(refused.value)
    assert "not local:all-MiniLM-L6-v2:" in str(refused.value)


def test_curated_search_explains_what_it_kept_back(store: CorpusStore) -> None:
    found = store.search("What is our refund window?", 6)
    kept_back = {f.chunk_id.split(":")[0]: f.reason for f in found.filtered}
    assert kept_back.get("refund-policy-v1") == "superseded by refund-policy-v2"
    assert kept_back.get("wiki-refund-tips") == "wiki source; a trusted source answers"
    assert {e.source for e in found.evidence}.isdisjoint(
        {"refund-policy-v1", "wiki-refund-tips", "forum-refund-hack"}
    )
    winners = {(c.winner.split(":")[0], c.loser.split(":")[0]) for c in found.conflicts}
    assert ("refund-policy-v2", "wiki-refund-tips") in winners


def test_injected_text_is_quarantined_at_ingest(settings: Settings, tmp_path: Path) -> None:
    fresh = Settings(home=tmp_path / "fresh", _env_file=None)  # type: ignore[call-arg]
    report = CorpusStore(fresh, embedder_for(fresh)).ingest(progress=False)
    assert any(q.startswith("forum-refund-hack:") for q in report.quarantined)
    hits = CorpusStore(fresh, embedder_for(fresh)).search("refund trick every charge", 6)
    assert "forum-refund-hack" not in {e.source for e in hits.evidence}
    assert any(f.reason.startswith("quarantined") for f in hits.filtered)


def test_a_failed_ingest_leaves_the_index_as_it_was(
    tmp_path: Path, indexed_home: Path, settings: Settings
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    changed = Settings(home=settings.home, corpus_dir=corpus, _env_file=None)  # type: ignore[call-arg]
    doc = corpus / "docs" / "faq-billing.md"
    doc.write_text(doc.read_text().replace("SEPA direct debit", "SEPA and PayPal"))

    class Broken:
        name = OnnxMiniLM.name  # the index's own embeddings, failing

        def embed(self, texts: list[str]) -> list[list[float]]:
            raise ConnectionError("embedding service down")

    before = CorpusStore(settings, embedder_for(settings)).count()
    with pytest.raises(ConnectionError):
        CorpusStore(changed, Broken()).ingest(progress=False)
    store = CorpusStore(settings, embedder_for(settings))
    assert store.count() == before
    assert any("SEPA direct debit" in e.text for e in store.query("payment methods", 6))


def test_an_unreadable_index_is_a_clear_error(tmp_path: Path) -> None:
    broken = Settings(home=tmp_path / "broken", _env_file=None)  # type: ignore[call-arg]
    broken.chroma_dir.mkdir(parents=True)
    (broken.chroma_dir / "chroma.sqlite3").write_text("this is not a database")
    with pytest.raises(CorpusMissing, match=r"cannot be opened|no corpus index"):
        CorpusStore(broken, embedder_for(broken)).require()


def test_hybrid_candidates_carry_lexical_scores(store: CorpusStore) -> None:
    plain = store.candidates("SEPA direct debit", 10)
    hybrid = store.candidates("SEPA direct debit", 10, hybrid=True)
    assert all(c.lexical == 0.0 for c in plain)
    assert max(c.lexical for c in hybrid) == 1.0  # scores are normalised to the best match
    best = max(hybrid, key=lambda c: c.lexical)
    assert "SEPA direct debit" in best.evidence.text


class _Counting:
    """The index's own embeddings, counting the texts embedded."""

    def __init__(self, settings: Settings) -> None:
        self.inner = embedder_for(settings)
        self.name = self.inner.name
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.texts += texts
        return self.inner.embed(texts)


def test_a_store_opens_its_collection_once_and_embeds_a_query_text_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = _Counting(settings)
    store = CorpusStore(settings, embedder)
    client = store.connection().client
    opened: list[str] = []
    real = client.get_collection
    monkeypatch.setattr(
        client, "get_collection", lambda *a, **k: opened.append("get") or real(*a, **k)
    )
    first = store.search("What is our refund window?", 6)
    again = store.search("What is our refund window?", 6)
    other = store.search("Which payment methods do we accept?", 6)
    assert first == again and other.evidence
    assert len(opened) == 1  # the handle and its count are kept, not fetched per query
    assert embedder.texts == ["What is our refund window?", "Which payment methods do we accept?"]


def test_a_store_reopens_a_collection_another_process_rebuilt(settings: Settings) -> None:
    store = CorpusStore(settings, embedder_for(settings))
    before = store.search("What is our refund window?", 6)
    # Another process (`keel ingest --rebuild`) drops the collection and makes a new one.
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False, rebuild=True)
    after = store.search("What is our refund window?", 6)
    assert [e.chunk_id for e in after.evidence] == [e.chunk_id for e in before.evidence]
    hybrid = settings.model_copy(update={"hybrid_retrieval": True})
    store = CorpusStore(hybrid, embedder_for(hybrid))
    store.search("SEPA direct debit", 6)
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False, rebuild=True)
    assert store.search("SEPA direct debit", 6).evidence


def test_a_store_says_so_when_the_collection_is_gone_for_good(settings: Settings) -> None:
    store = CorpusStore(settings, embedder_for(settings))
    store.search("What is our refund window?", 6)
    store.connection().client.delete_collection(settings.collection)
    with pytest.raises(CorpusMissing, match="keel ingest"):
        store.search("What is our refund window?", 6)
