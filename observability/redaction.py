"""Redaction of sensitive data, before anything is recorded or traced: by key and by value.

By key: a key is sensitive when, lower-cased, it equals a configured name or ends with ``_name``
/ ``-name`` (``api_key`` covers ``openai_api_key``; ``token`` does not cover ``input_tokens``).
Its value is replaced and the key kept, so a reader still sees that the field was there.

By value, in every string (free text included: a request, a prompt, an answer, a step's purpose):
each match of a configured pattern, and each value seen under a sensitive key earlier in the
same run (a ``to`` address is then hidden in the answer that repeats it too), is replaced.
"""

from __future__ import annotations

import re
import threading
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from keel.settings import Settings

M = TypeVar("M", bound=BaseModel)

REDACTED = "[redacted]"

MIN_LEARNED_CHARS = 4
"""A value under a sensitive key shorter than this is redacted where it stands, but not searched
for in free text: scrubbing every ``no`` or ``42`` of a run would destroy its record."""

IDENTIFIERS = frozenset(
    {
        "trace_id", "interrupt_id", "checkpoint_id", "from_checkpoint", "thread_id", "digest",
        "idempotency_key", "manifest_version",
    }
)  # fmt: skip
"""Declared fields that name things (ids, digests): never rewritten, so the record's links to
LangSmith, to checkpoints and to approvals hold whatever a pattern matches."""


def _placeholder(match: re.Match[str]) -> str:
    # A pattern that can match the empty string must not insert a placeholder between characters.
    return REDACTED if match.end() > match.start() else match.group()


class Redactor:
    """Replaces the values of sensitive keys, and sensitive text in every string, recursively.

    One redactor serves one run at a time (``begin``): the values it has seen under sensitive
    keys are scrubbed from the rest of that run's strings, the record's and the trace's.

    Example:
        >>> Redactor(["api_key"])({"openai_api_key": "sk-1", "nested": [{"api_key": 2}], "n": 1})
        {'openai_api_key': '[redacted]', 'nested': [{'api_key': '[redacted]'}], 'n': 1}
        >>> redact = Redactor(["to"], [r"\\bC-\\d{4}\\b"])
        >>> redact({"to": "ann@example.org", "body": "C-1002: mail ann@example.org"})
        {'to': '[redacted]', 'body': '[redacted]: mail [redacted]'}
    """

    def __init__(self, fields: Iterable[str], patterns: Iterable[str] = ()) -> None:
        self.fields = tuple(sorted({f.lower() for f in fields if f}))
        self.patterns = tuple(re.compile(p) for p in patterns)
        self.run_id: str | None = None
        self.learned: frozenset[str] = frozenset()
        self._scrubbers: tuple[re.Pattern[str], ...] = self.patterns
        # Whether a key is sensitive depends on the fields alone: every redactor of the same
        # fields shares the answers (a served run makes its own redactor, issue 26).
        self._keys: dict[str, bool] = _KEYS.setdefault(self.fields, {})
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """The redactor ``KEEL_SENSITIVE_FIELDS`` and ``KEEL_SENSITIVE_PATTERNS`` configure."""
        return cls(settings.sensitive_fields, settings.sensitive_patterns)

    def sensitive(self, key: str) -> bool:
        known = self._keys.get(key)
        if known is None:
            lowered = key.lower()
            known = any(
                lowered == f or lowered.endswith("_" + f) or lowered.endswith("-" + f)
                for f in self.fields
            )
            if len(self._keys) < 4096:  # keys repeat; a flood of distinct ones is not cached
                self._keys[key] = known
        return known

    def begin(self, run_id: str) -> None:
        """Redact for ``run_id`` from now on: values learned in another run are forgotten."""
        with self._lock:
            if run_id != self.run_id:
                self.run_id = run_id
                self.learned = frozenset()
                self._scrubbers = self.patterns

    def learn(self, value: Any) -> None:
        """Remember the strings under sensitive keys in ``value``, to scrub them from free text.

        ``KeelApp`` calls it with the thread's state when a segment starts, so a resume in
        another process knows the values its earlier segments saw.
        """
        found: list[str] = []
        self._walk(value, found)
        self._remember(found)

    def text(self, value: str) -> str:
        """``value`` with every pattern match and every learned value replaced."""
        for scrubber in self._scrubbers:
            value = scrubber.sub(_placeholder, value)
        return value

    def __call__(self, value: Any) -> Any:
        found: list[str] = []
        out = self._walk(value, found)
        if self._remember(found):
            out = self._walk(out, [])  # a value learned here may stand earlier in this value too
        return out

    def model(self, model: M) -> M:
        """A typed record with its data redacted; the schema's own fields stay fields.

        A declared field is never dropped or retyped: one that holds free-form data (a dict or
        list) has the keys inside redacted and its strings scrubbed, a string field (a request,
        an answer, an error) is scrubbed, nested models are walked the same way. Fields typed as
        a ``Literal`` and the ``IDENTIFIERS`` keep their values, so the result fits its schema.

        Example:
            >>> from observability.record_events import ApprovalAnswered
            >>> Redactor(["token"]).model(ApprovalAnswered(answer={"token": "t", "ok": 1})).answer
            {'token': '[redacted]', 'ok': 1}
        """
        found: list[str] = []
        out = self._model(model, found)
        if self._remember(found):
            out = self._model(out, [])
        return out

    def _model(self, model: M, found: list[str]) -> M:
        update: dict[str, Any] = {}
        for name in _data_fields(type(model)):
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                update[name] = self._model(value, found)
            elif isinstance(value, str):
                if self._scrubbers:
                    update[name] = self.text(value)
            elif isinstance(value, Mapping | list | tuple):
                update[name] = self._walk(value, found)
        return model.model_copy(update=update) if update else model

    def _walk(self, value: Any, found: list[str]) -> Any:
        kind = type(value)
        if kind in _SCALARS:  # most leaves: exact type checks first, ABC checks only after
            return value
        if kind is str or isinstance(value, str):
            return self.text(value) if self._scrubbers else value
        if kind is dict or isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            scrub = bool(self._scrubbers)
            for k, v in value.items():
                if isinstance(k, str):
                    if self.sensitive(k):
                        _strings(v, found)
                        v = REDACTED
                    else:
                        v = self._walk(v, found)
                    if scrub:
                        k = self.text(k)
                else:
                    v = self._walk(v, found)
                out[k] = v
            return out
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return [self._walk(v, found) for v in value]
        return value

    def _remember(self, found: list[str]) -> bool:
        """Learn the new values in ``found``; True when there were any."""
        fresh = {v for v in found if len(v) >= MIN_LEARNED_CHARS and v != REDACTED}
        fresh -= self.learned
        if not fresh:
            return False
        with self._lock:
            self.learned = self.learned | fresh
            # Longest first, so a value that contains another is replaced whole.
            literal = "|".join(re.escape(v) for v in sorted(self.learned, key=len, reverse=True))
            self._scrubbers = (re.compile(literal), *self.patterns)
        return True


_KEYS: dict[tuple[str, ...], dict[str, bool]] = {}
"""Per set of sensitive fields, each key seen and whether it is sensitive."""

_SCALARS = frozenset({int, float, bool, type(None)})
"""Leaf types with nothing to redact, told apart by exact type (``isinstance`` against the
``Mapping`` ABC was a tenth of a warm run's time, spent on these)."""


def _strings(value: Any, found: list[str]) -> None:
    """Every string in a sensitive value (a token, or a dict of credentials)."""
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _strings(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            _strings(v, found)


def _literal(annotation: Any) -> bool:
    """``Literal[...]``, or an optional one: a value the schema fixes, not data."""
    if typing.get_origin(annotation) is typing.Literal:
        return True
    args = typing.get_args(annotation)
    return bool(args) and all(a is type(None) or _literal(a) for a in args)


_DATA_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _data_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """The declared fields of ``cls`` that hold data: not a ``Literal``, not an identifier."""
    names = _DATA_FIELDS.get(cls)
    if names is None:
        names = tuple(
            name
            for name, info in cls.model_fields.items()
            if name not in IDENTIFIERS and not _literal(info.annotation)
        )
        _DATA_FIELDS[cls] = names
    return names
