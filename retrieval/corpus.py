"""The curated corpus: a manifest that says who owns each source and how far to trust it.

Ingestion refuses a source without an owner, tier, date or version, and chunks by structure
(one chunk per ``##`` section) with content-hash ids, so re-ingesting is idempotent.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graph.state import TrustTier
from keel.errors import CorpusMissing, first_error
from retrieval.screening import screen


class RunbookStep(BaseModel):
    """One step of a runbook written as data: the runbook planner fills it from the request's
    entities and the records, so a domain needs no Python for a runbook that only copies values.

    ``args``, ``purpose`` and ``postcondition`` are templates: ``{entities[email]}`` or
    ``{records[order][address]}``; an argument that is exactly one placeholder keeps the value's
    type (a number stays a number).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str
    args: dict[str, str]
    purpose: str
    effect: Literal["read", "write", "irreversible"]
    postcondition: str = ""


class SourceEntry(BaseModel):
    """One manifest entry."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    path: str
    title: str
    kind: Literal["policy", "runbook", "faq", "note"]
    trust_tier: TrustTier
    owner: str = Field(min_length=1)
    effective_date: date
    version: str
    supersedes: list[str] = Field(default_factory=list)
    expires: date | None = None
    intent: str | None = None
    keywords: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    steps: list[RunbookStep] = Field(
        default_factory=list,
        description="A runbook's steps as data (else the domain's runbook_plan fills it in code).",
    )

    @model_validator(mode="after")
    def _runbooks_name_their_intent(self) -> SourceEntry:
        if self.kind == "runbook" and not (self.intent and self.keywords):
            raise ValueError("a runbook needs an intent and keywords")
        if self.steps and self.kind != "runbook":
            raise ValueError("only a runbook has steps")
        return self


class CorpusManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    sources: list[SourceEntry]

    @model_validator(mode="after")
    def _consistent(self) -> CorpusManifest:
        ids = [s.id for s in self.sources]
        if len(ids) != len(set(ids)):
            raise ValueError("source ids must be unique")
        for source in self.sources:
            for old in source.supersedes:
                if old not in ids:
                    raise ValueError(f"{source.id} supersedes unknown source {old}")
        return self

    def superseded_by(self) -> dict[str, str]:
        return {old: s.id for s in self.sources for old in s.supersedes}


class Chunk(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_id: str
    source: SourceEntry
    section: str
    text: str
    superseded_by: str | None = None
    quarantine: list[str] = Field(default_factory=list)


INDEX_SCHEMA = "2"
"""Part of every chunk id: a change to what the index stores re-ingests every chunk."""


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it: the same safe subset, about ten times faster."""


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> object:
    """The YAML data of one version of a manifest file, parsed once.

    The planner reads the runbook steps on every runbook plan; parsing the demo's manifest with
    the pure-Python loader every time was most of a warm run (``docs/startup.md``). Keyed by the
    file's modification time and size, so an edited manifest is read again.
    """
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_YAML_LOADER)


def load_manifest(corpus_dir: Path) -> CorpusManifest:
    path = corpus_dir / "manifest.yaml"
    if not path.is_file():
        raise CorpusMissing(f"no corpus manifest at {path} (set KEEL_CORPUS_DIR)")
    stat = path.stat()
    return _validated(str(path), str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _validated(path: str, resolved: str, mtime_ns: int, size: int) -> CorpusManifest:
    """One version of a manifest file, parsed and validated once (the planner reads it on
    every runbook plan; validating its sources took a few ms a time, issue 26). Read only:
    every caller shares it. A refused manifest is not kept (it raises)."""
    try:
        raw = _parsed(resolved, mtime_ns, size)
    except yaml.YAMLError as err:
        raise CorpusMissing(f"{path} is not valid YAML: {err}") from err
    try:
        return CorpusManifest.model_validate(raw)
    except ValidationError as err:
        raise CorpusMissing(f"{path}: {first_error(err)}") from err


def chunk_markdown(text: str) -> list[tuple[str, str]]:
    """Split a document into (section, text) pairs, one per ``##`` section."""
    title_match = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    title = title_match.group(1).strip() if title_match else ""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    sections: list[tuple[str, str]] = []
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        body = " ".join(body.split())
        if body:
            sections.append((heading.strip(), f"{title} - {heading.strip()}: {body}"))
    if not sections and text.strip():
        sections.append(("", " ".join(text.split())))
    return sections


def load_corpus(corpus_dir: Path) -> tuple[CorpusManifest, list[Chunk]]:
    """Validate the manifest and chunk every source it lists."""
    manifest = load_manifest(corpus_dir)
    successors = manifest.superseded_by()
    chunks: list[Chunk] = []
    for source in manifest.sources:
        path = corpus_dir / source.path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CorpusMissing(f"source {source.id}: cannot read {path}: {err}") from err
        sections = chunk_markdown(text)
        if not sections:
            raise CorpusMissing(f"source {source.id}: {path} is empty")
        for section, body in sections:
            successor = successors.get(source.id) or ""
            identity = f"{INDEX_SCHEMA}\n{source.model_dump_json()}\n{successor}\n{body}"
            digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
            chunks.append(
                Chunk(
                    chunk_id=f"{source.id}:{digest}",
                    source=source,
                    section=section,
                    text=body,
                    superseded_by=successors.get(source.id),
                    quarantine=screen(body),
                )
            )
    return manifest, chunks
