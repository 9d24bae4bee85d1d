"""The corpus index in Chroma (embedded by default, a Chroma server with ``KEEL_CHROMA_URL``) and
the curated search the retriever uses."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from graph.state import Evidence
from keel.errors import CorpusMissing, KeelError
from keel.settings import Settings
from retrieval.corpus import Chunk, load_corpus
from retrieval.curation import Candidate, Retrieval, curate
from retrieval.embeddings import Embedder
from retrieval.lexical import BM25

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from retrieval.chroma import Connection

BATCH = 64
QUERY_VECTORS = 256
"""Query texts whose embedding a store keeps (a re-run or a retried retrieval embeds again)."""


@contextlib.contextmanager
def _same_dimensions(store: CorpusStore) -> Any:
    """A vector of another size than the index holds (the same model name, another model behind
    it) is a setting to fix, named as such, not a raw Chroma error."""
    invalid_argument = store.connection().InvalidArgument
    try:
        yield
    except invalid_argument as err:
        if "dimension" not in str(err):
            raise
        raise CorpusMissing(
            f"the index in {store.location} holds embeddings of another size than "
            f"{store.embedder.name} gives ({err}): run `keel ingest --rebuild`, or set "
            "KEEL_EMBEDDING_BACKEND / KEEL_EMBEDDING_MODEL to the embeddings it was built with"
        ) from err


@dataclass(frozen=True)
class IngestReport:
    added: int
    removed: int
    unchanged: int
    quarantined: list[str] = field(default_factory=list)


class CorpusStore:
    """One Chroma collection holding the corpus chunks with their provenance as metadata.

    A store keeps the collection's handle and its count between queries (on a Chroma server each
    is an HTTP call), and the embedding of the last ``QUERY_VECTORS`` query texts (the same
    embedder gives the same vector for the same text). A collection dropped or rebuilt meanwhile
    (``keel ingest --rebuild`` in another process) fails the query on the old handle: the store
    then opens it again once, and a collection gone for good is ``CorpusMissing``.
    """

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self._connection: Connection | None = None
        self._lexical: tuple[list[str], BM25] | None = None
        self._opened: tuple[Collection, int] | None = None
        self._vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()  # a serving process runs several runs on threads
        # Opening is its own lock: two embedded clients opened at once on one folder fail.
        self._opening = threading.Lock()

    @property
    def location(self) -> str:
        """Where the index lives, for messages: the server's URL or the embedded folder."""
        return self.settings.chroma_url or str(self.settings.chroma_dir)

    def connection(self) -> Connection:
        """The Chroma connection, opened at the index's first use.

        ``retrieval.chroma`` (and with it ``chromadb``) is imported here, not with this module:
        every command's context holds a store, and the commands that never retrieve (show,
        resume, trace, ...) should not pay seconds of start-up for Chroma.
        """
        if self._connection is None:
            with self._opening:
                if self._connection is None:
                    from retrieval.chroma import Connection

                    self._connection = Connection(self.settings)
        return self._connection

    def _collection(self, *, create: bool) -> Collection:
        client = self.connection().client
        metadata = {"hnsw:space": "cosine", "embedding": self.embedder.name}
        if create:
            collection: Collection = client.get_or_create_collection(
                self.settings.collection, embedding_function=None, metadata=metadata
            )
        else:
            try:
                collection = client.get_collection(
                    self.settings.collection, embedding_function=None
                )
            except Exception as err:  # chromadb raises NotFoundError or ValueError by version
                self.connection().check()  # a server that went away says so
                raise CorpusMissing(
                    f"no corpus index in {self.location}: run `keel ingest` first"
                ) from err
        built_with = (collection.metadata or {}).get("embedding")
        if built_with != self.embedder.name:
            raise CorpusMissing(
                f"the index was built with {built_with} embeddings, not {self.embedder.name}: "
                "run `keel ingest --rebuild` or set KEEL_EMBEDDING_BACKEND to match"
            )
        return collection

    def require(self) -> None:
        """Raise CorpusMissing, saying how to fix it, unless the index can answer queries."""
        if self.count() == 0:
            raise CorpusMissing(f"the corpus index in {self.location} is empty: run `keel ingest`")

    def ingest(self, *, progress: bool | None = None, rebuild: bool = False) -> IngestReport:
        """Bring the index in line with the corpus: add new chunks, drop stale ones.

        Everything that can fail (the manifest, the documents, the embeddings) is done before the
        index is touched, so a failed ingest leaves the previous index as it was. Chunk ids are
        content hashes: an unchanged corpus writes nothing, and a changed document's old chunks
        are removed.
        """
        _, chunks = load_corpus(self.settings.corpus_dir)
        self._forget()
        if rebuild:
            with contextlib.suppress(Exception):  # the collection did not exist
                self.connection().client.delete_collection(self.settings.collection)
        collection = self._collection(create=True)
        existing = set(collection.get(include=[])["ids"])
        wanted = {chunk.chunk_id: chunk for chunk in chunks}
        stale = sorted(existing - wanted.keys())
        new = [chunk for cid, chunk in wanted.items() if cid not in existing]
        show = sys.stderr.isatty() if progress is None else progress
        bar = _progress(len(new), "embedding corpus", show)
        vectors: list[list[float]] = []
        for start in range(0, len(new), BATCH):
            vectors += self.embedder.embed([c.text for c in new[start : start + BATCH]])
            bar(min(BATCH, len(new) - start))
        written = 0
        try:
            for start in range(0, len(new), BATCH):
                written += self.write(new[start : start + BATCH], vectors[start : start + BATCH])
            if stale:
                collection.delete(ids=stale)
        except Exception as err:
            raise KeelError(
                f"ingest stopped after writing {written} of {len(new)} new chunks ({err}); the "
                "index still holds every earlier chunk: run `keel ingest` again"
            ) from err
        return IngestReport(
            added=len(new),
            removed=len(stale),
            unchanged=len(existing & wanted.keys()),
            quarantined=[f"{c.chunk_id}: {', '.join(c.quarantine)}" for c in new if c.quarantine],
        )

    def write(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Upsert already-embedded chunks with their provenance; returns how many."""
        with _same_dimensions(self):
            self._collection(create=True).upsert(
                ids=[c.chunk_id for c in chunks],
                embeddings=list(vectors),  # type: ignore[arg-type]
                documents=[c.text for c in chunks],
                metadatas=[_metadata(c) for c in chunks],
            )
        self._forget()
        return len(chunks)

    def count(self) -> int:
        """Chunks in the index."""
        return int(self._collection(create=False).count())

    def candidates(self, text: str, n: int, *, hybrid: bool = False) -> list[Candidate]:
        """The ``n`` nearest chunks by cosine similarity, with what curation needs.

        With ``hybrid``, the ``n`` best BM25 matches join them, each candidate carrying its
        normalised lexical score for the ranking.
        """
        self._open()  # refuses an index of other embeddings before anything is embedded
        query_vector = self._query_vector(text)
        try:
            return self._candidates(query_vector, text, n, hybrid=hybrid)
        except CorpusMissing:
            raise
        except Exception:
            # The kept handle may name a collection dropped or rebuilt since: open it again once
            # (a collection gone for good is then CorpusMissing, a server gone a ConfigError).
            self._forget()
            return self._candidates(query_vector, text, n, hybrid=hybrid)

    def _candidates(
        self, query_vector: list[float], text: str, n: int, *, hybrid: bool
    ) -> list[Candidate]:
        collection, count = self._open()
        with _same_dimensions(self):
            hits = collection.query(
                query_embeddings=[query_vector],  # type: ignore[arg-type]
                n_results=max(1, min(n, count)),
                include=["documents", "metadatas", "distances"],
            )
        ids, docs = hits["ids"][0], hits["documents"] or [[]]
        metas, dists = hits["metadatas"] or [[]], hits["distances"] or [[]]
        found = {
            cid: _candidate(cid, doc, meta, dist)
            for cid, doc, meta, dist in zip(ids, docs[0], metas[0], dists[0], strict=True)
        }
        if not hybrid:
            return list(found.values())
        lexical = self._lexical_scores(collection, text)
        best = sorted(lexical, key=lambda cid: -lexical[cid])[:n]
        missing = [cid for cid in best if cid not in found and lexical[cid] > 0]
        if missing:
            extra = collection.get(ids=missing, include=["documents", "metadatas", "embeddings"])
            for cid, doc, meta, vec in zip(
                extra["ids"], extra["documents"] or [], extra["metadatas"] or [],
                extra["embeddings"] if extra["embeddings"] is not None else [], strict=True,
            ):  # fmt: skip
                cosine = float(sum(a * b for a, b in zip(vec, query_vector, strict=True)))
                found[cid] = _candidate(cid, doc, meta, 1.0 - cosine)
        return [dataclasses.replace(c, lexical=lexical.get(cid, 0.0)) for cid, c in found.items()]

    def _open(self) -> tuple[Collection, int]:
        """The collection and its count, as this store last opened them."""
        with self._lock:
            opened = self._opened
        if opened is None:
            collection = self._collection(create=False)
            opened = (collection, int(collection.count()))
            with self._lock:
                self._opened = opened
        return opened

    def _forget(self) -> None:
        """Drop what was kept of the collection (its handle, count and lexical index)."""
        with self._lock:
            self._opened = None
            self._lexical = None

    def _query_vector(self, text: str) -> list[float]:
        with self._lock:
            kept = self._vectors.get(text)
            if kept is not None:
                self._vectors.move_to_end(text)
                return kept
        vector = list(self.embedder.embed([text])[0])
        with self._lock:
            self._vectors[text] = vector
            while len(self._vectors) > QUERY_VECTORS:
                self._vectors.popitem(last=False)
        return vector

    def _lexical_scores(self, collection: Collection, text: str) -> dict[str, float]:
        if self._lexical is None:
            everything = collection.get(include=["documents"])
            self._lexical = (everything["ids"], BM25(everything["documents"] or []))
        ids, index = self._lexical
        raw = index.scores(text)
        top = max(raw, default=0.0) or 1.0
        return {cid: score / top for cid, score in zip(ids, raw, strict=True)}

    def search(self, text: str, k: int, today: date | None = None) -> Retrieval:
        """Curated retrieval: what a planner may rely on, what was kept from it, what conflicts."""
        pool = self.candidates(text, max(4 * k, 20), hybrid=self.settings.hybrid_retrieval)
        return curate(pool, k, today)

    def query(self, text: str, k: int) -> list[Evidence]:
        """The evidence of :meth:`search` alone."""
        return self.search(text, k).evidence


def _metadata(chunk: Chunk) -> dict[str, Any]:
    source = chunk.source
    metadata: dict[str, Any] = {
        "source": source.id,
        "title": source.title,
        "kind": source.kind,
        "trust_tier": source.trust_tier,
        "owner": source.owner,
        "effective_date": source.effective_date.isoformat(),
        "expires": source.expires.isoformat() if source.expires else "",
        "version": source.version,
        "section": chunk.section,
        "superseded_by": chunk.superseded_by or "",
        "quarantine": ", ".join(chunk.quarantine),
        "intent": source.intent or "",
    }
    if source.keywords:
        metadata["keywords"] = source.keywords
    if source.requires:
        metadata["requires"] = source.requires
    return metadata


def _candidate(chunk_id: str, text: str, meta: Any, distance: float) -> Candidate:
    evidence = Evidence(
        chunk_id=chunk_id,
        source=meta["source"],
        title=meta["title"],
        kind=meta["kind"],
        trust_tier=meta["trust_tier"],
        owner=meta["owner"],
        effective_date=meta["effective_date"],
        score=round(1.0 - float(distance), 4),
        text=text,
        intent=meta.get("intent") or None,
        keywords=list(meta.get("keywords") or []),
        requires=list(meta.get("requires") or []),
    )
    return Candidate(
        evidence=evidence,
        section=meta.get("section", ""),
        superseded_by=meta.get("superseded_by", ""),
        quarantine=meta.get("quarantine", ""),
        expires=meta.get("expires", ""),
    )


def _progress(total: int, label: str, show: bool) -> Any:
    """A tqdm bar on a terminal, silence elsewhere."""
    if not show or total == 0:
        return lambda n: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="chunk", file=sys.stderr)

    def step(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return step
