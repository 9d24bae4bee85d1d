"""Runbooks written as data: their steps, filled from the request's entities and the records.

A runbook whose manifest entry lists ``steps`` (``retrieval.corpus.RunbookStep``) is planned
here, with no domain code; one without is the domain's to fill (``Domain.runbook_plan``), for
rules data cannot express (choosing one record among several by a business rule, say).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from string import Formatter
from typing import Any

from graph.state import CannotPlan, Evidence, Plan, Step
from retrieval.corpus import CorpusManifest, RunbookStep

_FIELD = re.compile(r"^(entities|records)(\[[^\[\].]+\])+$")


class _Missing(Exception):
    pass


def fill_runbook(
    runbook: Evidence,
    steps: Sequence[RunbookStep],
    entities: dict[str, str],
    records: dict[str, Any],
    pinned: Mapping[int, Mapping[str, Any]] | None = None,
) -> Plan | CannotPlan:
    """The plan a data runbook describes, or why it cannot be filled.

    ``pinned`` fixes arguments of some steps (a reviewer's edit: step index to arguments). An
    argument whose template is one placeholder fixes that placeholder's value for the whole
    runbook, so every step and description that uses it says the new value; an argument written
    otherwise is taken as given (the planner sets it, the validator checks what still states the
    old value).

    Example:
        >>> runbook = Evidence.model_construct(chunk_id="rb:1", source="rb", intent="cancel")
        >>> step = RunbookStep(tool="cancel_order", args={"order_id": "{records[order][id]}"},
        ...                    purpose="Cancel {records[order][id]}", effect="write")
        >>> plan = fill_runbook(runbook, [step], {}, {"order": {"id": "ORD-7"}})
        >>> plan.steps[0].args, plan.steps[0].purpose
        ({'order_id': 'ORD-7'}, 'Cancel ORD-7')
        >>> fill_runbook(runbook, [step], {}, {}).reason
        'runbook rb needs records[order][id], which the records lack'
    """
    cite = [runbook.chunk_id]
    values = {"entities": entities, "records": records}
    fixed: dict[str, Any] = {}
    for index, args in (pinned or {}).items():
        if 0 <= index < len(steps):
            for name, value in args.items():
                field = _single_field(steps[index].args.get(name))
                if field is not None:
                    fixed[field] = value
    try:
        filled = [
            Step(
                tool=s.tool,
                args={name: _value(template, values, fixed) for name, template in s.args.items()},
                purpose=str(_value(s.purpose, values, fixed)),
                effect=s.effect,
                evidence=cite,
                postcondition=str(_value(s.postcondition, values, fixed)),
            )
            for s in steps
        ]
    except _Missing as err:
        return CannotPlan(reason=f"runbook {runbook.source} needs {err}, which the records lack")
    return Plan(intent=runbook.intent or runbook.source, evidence=cite, steps=filled)


def _single_field(template: Any) -> str | None:
    """The placeholder a template is made of alone (``"{entities[amount]}"``), else None."""
    if not isinstance(template, str):
        return None
    parts = list(Formatter().parse(template))
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1] and not parts[0][2]:
        return parts[0][1]
    return None


def _value(template: str, values: dict[str, Any], fixed: Mapping[str, Any] | None = None) -> Any:
    """A template filled in; exactly one placeholder keeps its value's own type. ``fixed``
    gives some placeholders their value (an edit's), whatever the records say."""
    parts = list(Formatter().parse(template))
    fields = [f for _, f, _, _ in parts if f is not None]
    for field in fields:
        if not _FIELD.match(field):  # no attribute access, no positional fields
            raise _Missing(
                f"a placeholder of the form {{entities[..]}} or {{records[..]}}: {field}"
            )
    if len(parts) == 1 and parts[0][0] == "" and fields:
        return _lookup(fields[0], values, fixed)
    return "".join(
        text + ("" if field is None else str(_lookup(field, values, fixed)))
        for text, field, _, _ in parts
    )


def _lookup(field: str, values: dict[str, Any], fixed: Mapping[str, Any] | None = None) -> Any:
    if fixed and field in fixed:
        return fixed[field]
    root, _, rest = field.partition("[")
    current: Any = values[root]
    for key in rest.rstrip("]").split("]["):
        if not isinstance(current, dict) or key not in current or current[key] is None:
            raise _Missing(field)
        current = current[key]
    return current


def runbook_steps(manifest: CorpusManifest) -> dict[str, list[RunbookStep]]:
    """The data runbooks of a corpus: source id to its steps."""
    return {s.id: s.steps for s in manifest.sources if s.kind == "runbook" and s.steps}
