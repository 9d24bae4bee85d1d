"""What each thread's reviewers were shown and who changed it: the approval requests' history.

A chat panel answers an approval with no digest and no request id (``graph/approval.py``), so
whether such an answer may count depends on what was shown before it: the requests raised, the
edits proposed between them, and the refusals that showed a reviewer the changed actions. That
history decides what an approval means, so it lives outside the checkpoint, which any client with
thread access can write (``update_state``, forks): a state write cannot erase an edit proposal or
pretend a request was already shown.

The log is append-only, one entry per event, and idempotent per (thread, kind, key): the approval
node runs again from its first line when it is resumed, and finds the entry its first run wrote.
``ReviewLog`` is the protocol; ``StoredReviewLog`` keeps it in the thread guard's store
(``stores.guard``: the intent ledger's SQLite file, or PostgreSQL beside the checkpoints with
``KEEL_POSTGRES_URL``, so every worker on every machine reads the same history);
``MemoryReviewLog`` in the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

EntryKind = Literal["shown", "proposed", "acknowledged"]


@dataclass(frozen=True)
class ReviewEntry:
    """One event of a thread's approval history.

    Attributes:
        kind: ``shown`` (an approval request was raised), ``proposed`` (someone proposed an
            edit of the pending actions), ``acknowledged`` (someone's answer was refused because
            the actions had changed, and the request was shown to them again).
        key: what makes the entry unique in its thread and kind (the approval task's id for
            ``shown``; the request answered and who answered for the others).
        by: who proposed or acknowledged (a reviewer's name); for ``shown``, who changed the
            actions last (empty when nobody is known to have changed them).
        digests: ``shown``: the digests of the actions shown.
        revision: ``shown``: how many times the thread's pending actions changed before this
            request; ``acknowledged``: the revision that was shown again.
        request_id: ``shown``: the request's identity.
    """

    kind: EntryKind
    key: str
    by: str = ""
    digests: tuple[str, ...] = ()
    revision: int = 0
    request_id: str = ""


class ReviewLog(Protocol):
    """An append-only history of approval requests per thread."""

    def entries(self, thread_id: str) -> list[ReviewEntry]:
        """The thread's entries, oldest first."""

    def add(self, thread_id: str, entry: ReviewEntry) -> None:
        """Append ``entry``, unless the thread already has one of that kind with that key."""


@dataclass
class MemoryReviewLog:
    """The history in this process only (tests, a caller with no home)."""

    _entries: dict[str, list[ReviewEntry]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def entries(self, thread_id: str) -> list[ReviewEntry]:
        with self._lock:
            return list(self._entries.get(thread_id, []))

    def add(self, thread_id: str, entry: ReviewEntry) -> None:
        with self._lock:
            kept = self._entries.setdefault(thread_id, [])
            if not any(e.kind == entry.kind and e.key == entry.key for e in kept):
                kept.append(entry)


class ReviewStore(Protocol):
    """Where a ``StoredReviewLog`` keeps its entries: the thread guard (``stores.guard``)."""

    def add_review_entry(self, thread_id: str, kind: str, key: str, entry: str) -> None: ...

    def review_entries(self, thread_id: str) -> list[str]: ...


@dataclass
class StoredReviewLog:
    """The history in the thread guard's store, shared by every process and machine using it.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from stores.guard import SqliteGuard
        >>> log = StoredReviewLog(SqliteGuard(Path(tempfile.mkdtemp()) / "intents.sqlite"))
        >>> log.add("t-1", ReviewEntry("proposed", "r-1:ann", by="ann"))
        >>> log.add("t-1", ReviewEntry("proposed", "r-1:ann", by="ann"))  # the node ran again
        >>> [e.by for e in log.entries("t-1")], log.entries("t-2")
        (['ann'], [])
    """

    store: ReviewStore

    def entries(self, thread_id: str) -> list[ReviewEntry]:
        return [_entry(json.loads(body)) for body in self.store.review_entries(thread_id)]

    def add(self, thread_id: str, entry: ReviewEntry) -> None:
        body = json.dumps(
            {
                "kind": entry.kind,
                "key": entry.key,
                "by": entry.by,
                "digests": list(entry.digests),
                "revision": entry.revision,
                "request_id": entry.request_id,
            }
        )
        self.store.add_review_entry(thread_id, entry.kind, entry.key, body)


def entries_of(
    log: ReviewLog, thread_id: str, *, store: object, read: Sequence[str] | None
) -> list[ReviewEntry]:
    """The thread's entries: ``read`` (the bodies ``store`` holds, read with the thread guard's
    facts: ``Guard.facts(reviews=True)``, one round trip for both) when ``log`` keeps its
    entries in ``store``; else read from ``log``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from stores.guard import SqliteGuard
        >>> guard = SqliteGuard(Path(tempfile.mkdtemp()) / "intents.sqlite")
        >>> log = StoredReviewLog(guard)
        >>> log.add("t-1", ReviewEntry("proposed", "r-1:ann", by="ann"))
        >>> read = guard.facts("t-1", reviews=True).reviews
        >>> entries_of(log, "t-1", store=guard, read=read) == log.entries("t-1")
        True
        >>> entries_of(MemoryReviewLog(), "t-1", store=guard, read=read)  # not the guard's
        []
    """
    if read is not None and isinstance(log, StoredReviewLog) and log.store is store:
        return [_entry(json.loads(body)) for body in read]
    return log.entries(thread_id)


def _entry(body: dict[str, object]) -> ReviewEntry:
    kind = str(body["kind"])
    if kind not in ("shown", "proposed", "acknowledged"):
        raise ValueError(f"not a review log entry: {kind}")
    digests = body.get("digests") or []
    revision = body.get("revision") or 0
    return ReviewEntry(
        kind=kind,  # type: ignore[arg-type]
        key=str(body["key"]),
        by=str(body.get("by") or ""),
        digests=tuple(str(d) for d in digests) if isinstance(digests, list) else (),
        revision=int(revision) if isinstance(revision, int) else 0,
        request_id=str(body.get("request_id") or ""),
    )
