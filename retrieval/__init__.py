"""Curated retrieval: a manifest-described corpus, indexed in Chroma, queried with provenance."""

from retrieval.corpus import Chunk, CorpusManifest, load_corpus
from retrieval.store import CorpusStore

__all__ = ["Chunk", "CorpusManifest", "CorpusStore", "load_corpus"]
