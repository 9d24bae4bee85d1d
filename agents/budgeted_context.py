"""Managed context: each agent's prompt is assembled from typed sections under a token budget.

Two rules keep prompts bounded as a workflow grows. Finished steps become working memory: typed
facts with provenance (tool, step), not raw tool output; what a step *did* (a write or an
irreversible action) is always kept, what it *read* is folded into a count once it is old, since
it can be read again. And every section has a priority: when the budget is short, the least
important sections shrink first, and the prompt says what it left out.

Token counts are offline: langchain-core's approximate counter (tiktoken would download its tables).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from langchain_core.messages import HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from pydantic import BaseModel, ConfigDict

from graph.state import ToolOutcome

MAX_FACT_CHARS = 120
RECENT_READS = 3


def tokens(text: str) -> int:
    """Approximate tokens of ``text`` as one message."""
    return int(count_tokens_approximately([HumanMessage(text)]))


class Fact(BaseModel):
    """One thing a finished step established, with where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int
    tool: str
    effect: str
    key: str
    value: str

    def render(self) -> str:
        return f"[step {self.step + 1} {self.tool}] {self.key} = {self.value}"


def remember(results: Sequence[ToolOutcome], effects: Mapping[str, str]) -> list[Fact]:
    """Working memory from finished steps: scalar facts, long text dropped.

    Args:
        results: the executor's outcomes, in order.
        effects: each tool's effect (``read``/``write``/``irreversible``), from its spec.
    """
    facts: list[Fact] = []
    for r in results:
        effect = effects.get(r.tool, "irreversible")
        if not r.ok:
            facts.append(Fact(step=r.step, tool=r.tool, effect=effect, key="error",
                              value=(r.error or "")[:MAX_FACT_CHARS]))  # fmt: skip
            continue
        for key, value in (r.output or {}).items():
            if isinstance(value, str | int | float | bool) and len(str(value)) <= MAX_FACT_CHARS:
                facts.append(Fact(step=r.step, tool=r.tool, effect=effect, key=key,
                                  value=str(value)))  # fmt: skip
    return facts


def render_memory(facts: Sequence[Fact], budget: int) -> str:
    """The memory section: every side effect, the latest reads, older reads as a count.

    If that still exceeds ``budget`` tokens, side effects keep only their ids, and then the
    oldest facts go, with the count saying so.
    """
    if not facts:
        return "none yet"
    steps = sorted({f.step for f in facts})
    read_steps = [s for s in steps if all(f.effect == "read" for f in facts if f.step == s)]
    folded = read_steps[:-RECENT_READS]
    kept = [f for f in facts if f.step not in folded]

    def text() -> str:
        head = []
        if folded:
            tools = Counter(next(f.tool for f in facts if f.step == s) for s in folded)
            summary = ", ".join(f"{t} x{n}" for t, n in sorted(tools.items()))
            head.append(f"{len(folded)} earlier step(s) folded ({summary}); read again if needed")
        return "\n".join(head + [f.render() for f in kept])

    if tokens(text()) > budget:
        kept = [f for f in kept if f.effect == "read" or f.key.endswith("_id")]
    while tokens(text()) > budget and kept:
        oldest = kept[0].step
        folded.append(oldest)
        kept = [f for f in kept if f.step != oldest]
    return text()


@dataclass(frozen=True)
class Section:
    """A named part of a prompt; lower ``priority`` is kept first when the budget is short."""

    name: str
    text: str
    priority: int


@dataclass(frozen=True)
class Assembled:
    text: str
    tokens: int
    trimmed: list[str]


def assemble(sections: Sequence[Section], budget: int) -> Assembled:
    """Join sections in order, shrinking the least important ones until the whole fits ``budget``.

    Raises:
        ValueError: the sections that cannot shrink (priority 0) alone exceed the budget.
    """
    texts = {s.name: s.text for s in sections}
    trimmed: list[str] = []

    def joined() -> str:
        return "\n\n".join(texts[s.name] for s in sections if texts[s.name])

    fixed = sum(tokens(s.text) for s in sections if s.priority == 0)
    if fixed > budget:
        raise ValueError(
            f"the fixed part of the prompt needs {fixed} tokens; the budget is {budget}"
        )
    for section in sorted((s for s in sections if s.priority > 0), key=lambda s: -s.priority):
        while tokens(joined()) > budget and texts[section.name]:
            lines = texts[section.name].splitlines()
            texts[section.name] = "\n".join(lines[:-1]) if len(lines) > 1 else ""
            if section.name not in trimmed:
                trimmed.append(section.name)
        if tokens(joined()) <= budget:
            break
    text = joined()
    return Assembled(text=text, tokens=tokens(text), trimmed=trimmed)
