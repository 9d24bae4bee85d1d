"""Redaction of the fields configured as sensitive, before anything is recorded or traced.

A key is sensitive when, lower-cased, it equals a configured name or ends with ``_name`` /
``-name`` (``api_key`` covers ``openai_api_key``; ``token`` does not cover ``input_tokens``).
Values are replaced, keys are kept, so a reader still sees that the field was there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

REDACTED = "[redacted]"


class Redactor:
    """Replaces the values of sensitive keys, recursively, in dicts, lists and tuples.

    Example:
        >>> Redactor(["api_key"])({"openai_api_key": "sk-1", "nested": [{"api_key": 2}], "n": 1})
        {'openai_api_key': '[redacted]', 'nested': [{'api_key': '[redacted]'}], 'n': 1}
    """

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(sorted({f.lower() for f in fields if f}))

    def sensitive(self, key: str) -> bool:
        lowered = key.lower()
        return any(
            lowered == f or lowered.endswith("_" + f) or lowered.endswith("-" + f)
            for f in self.fields
        )

    def __call__(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if isinstance(k, str) and self.sensitive(k) else self(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value

    def model(self, model: M) -> M:
        """A typed record with its free-form data redacted; the schema's own fields are not data.

        A field declared by a model (``request``, ``output``, ``token`` counts) keeps its value
        unless it holds free-form data (a dict or list), in which case the keys inside are
        redacted; nested models are walked the same way. The result still fits its schema.

        Example:
            >>> from observability.events import ApprovalAnswered
            >>> Redactor(["token"]).model(ApprovalAnswered(answer={"token": "t", "ok": 1})).answer
            {'token': '[redacted]', 'ok': 1}
        """
        update: dict[str, Any] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                update[name] = self.model(value)
            elif isinstance(value, Mapping | list | tuple):
                update[name] = self(value)
        return model.model_copy(update=update)
