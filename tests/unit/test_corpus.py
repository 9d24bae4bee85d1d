"""The corpus manifest is validated and documents are chunked by structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel.errors import CorpusMissing
from retrieval.corpus import chunk_markdown, load_corpus, load_manifest

ENTRY = {
    "id": "refund-policy",
    "path": "refund.md",
    "title": "Refund policy",
    "kind": "policy",
    "trust_tier": "official",
    "owner": "finance",
    "effective_date": "2026-01-01",
    "version": "1",
}


def _corpus(tmp_path: Path, *entries: dict[str, object], text: str = "# T\n## A\nalpha\n") -> Path:
    (tmp_path / "refund.md").write_text(text)
    (tmp_path / "manifest.yaml").write_text(
        yaml.safe_dump({"version": 1, "sources": list(entries)})
    )
    return tmp_path


def test_chunks_by_section_with_the_title() -> None:
    chunks = chunk_markdown(
        "# Policy\n\n## Window\n30 days.\n\n## Limits\nNot above\nthe charge.\n"
    )
    assert chunks == [
        ("Window", "Policy - Window: 30 days."),
        ("Limits", "Policy - Limits: Not above the charge."),
    ]


def test_chunk_ids_are_content_hashes(tmp_path: Path) -> None:
    _, first = load_corpus(_corpus(tmp_path, ENTRY))
    _, again = load_corpus(_corpus(tmp_path, ENTRY))
    _, changed = load_corpus(_corpus(tmp_path, ENTRY, text="# T\n## A\nbeta\n"))
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert first[0].chunk_id != changed[0].chunk_id


@pytest.mark.parametrize(
    ("missing", "message"),
    [("owner", "sources.0.owner: Field required"), ("trust_tier", "sources.0.trust_tier")],
)
def test_an_entry_without_owner_or_tier_is_refused(
    tmp_path: Path, missing: str, message: str
) -> None:
    entry = {k: v for k, v in ENTRY.items() if k != missing}
    with pytest.raises(CorpusMissing, match=message):
        load_corpus(_corpus(tmp_path, entry))


def test_an_unknown_tier_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissing, match="trust_tier"):
        load_corpus(_corpus(tmp_path, {**ENTRY, "trust_tier": "gospel"}))


def test_superseding_an_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissing, match="supersedes unknown source"):
        load_corpus(_corpus(tmp_path, {**ENTRY, "supersedes": ["ghost"]}))


def test_an_empty_document_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissing, match="is empty"):
        load_corpus(_corpus(tmp_path, ENTRY, text="   \n"))


def test_a_missing_document_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissing, match="cannot read"):
        load_corpus(_corpus(tmp_path, {**ENTRY, "path": "nowhere.md"}))


def test_the_demo_corpus_is_valid() -> None:
    from domains.support_desk import CORPUS as DEMO_CORPUS

    manifest, chunks = load_corpus(DEMO_CORPUS)
    assert len(manifest.sources) >= 10
    assert {c.superseded_by for c in chunks if c.source.id == "refund-policy-v1"} == {
        "refund-policy-v2"
    }


def test_a_manifest_is_validated_once_per_version_of_its_file(tmp_path: Path) -> None:
    """The planner reads the manifest on every runbook plan (issue 26): the same file gives the
    same validated manifest; an edited one is read and validated again."""
    corpus = _corpus(tmp_path, ENTRY)
    first = load_manifest(corpus)
    assert load_manifest(corpus) is first
    _corpus(tmp_path, {**ENTRY, "title": "Refund policy, revised"})
    assert load_manifest(corpus).sources[0].title == "Refund policy, revised"
