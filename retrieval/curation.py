"""Curation: from raw nearest neighbours to the evidence a planner may rely on.

Pure functions over candidates, so every rule is testable without an index:
superseded, expired and quarantined chunks never pass; low-trust chunks pass only when no trusted
source answers; what is left is ranked by relevance, trust and freshness; and conflicting figures
between sources are reported with the source that wins and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from itertools import combinations

from graph.state import Conflict, Evidence, Filtered

TRUSTED = ("official", "reviewed")
TIER_BONUS = {"official": 0.08, "reviewed": 0.05, "wiki": -0.05, "untrusted": -0.15}
TIER_RANK = {"official": 0, "reviewed": 1, "wiki": 2, "untrusted": 3}
LEXICAL_WEIGHT = 0.15
MIN_RELEVANT = 0.35
"""Similarity above which a trusted chunk counts as answering the query."""

_FIGURE = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*"
    r"(business days|working days|business hours|working hours|days|hours|minutes|weeks|months"
    r"|years|%|eur|euros?)(?!\w)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Candidate:
    """A raw hit with what curation needs beyond the evidence itself."""

    evidence: Evidence
    section: str
    superseded_by: str = ""
    quarantine: str = ""
    expires: str = ""
    lexical: float = 0.0
    """Normalised BM25 score in [0, 1] when hybrid ranking is on."""

    @property
    def bad(self) -> bool:
        """Stale, expired, injected or low-trust: what must not reach a planner when avoidable."""
        return bool(self.superseded_by or self.quarantine or self.expires_before(date.today())) or (
            self.evidence.trust_tier not in TRUSTED
        )

    def expires_before(self, today: date) -> bool:
        return bool(self.expires) and date.fromisoformat(self.expires) < today


@dataclass(frozen=True)
class Retrieval:
    evidence: list[Evidence]
    filtered: list[Filtered]
    conflicts: list[Conflict]


def figures(text: str) -> dict[str, set[str]]:
    """Numbers by unit: ``{"days": {"30"}}`` for "within 30 days"."""
    found: dict[str, set[str]] = {}
    for value, unit in _FIGURE.findall(text):
        unit = unit.lower().rstrip("s") if unit.lower() not in ("%",) else "%"
        found.setdefault(unit, set()).add(value.replace(",", "."))
    return found


def _say(values: set[str], unit: str) -> str:
    plural = "" if unit in ("%", "eur") else "s"
    return " or ".join(f"{v} {unit}{plural}" for v in sorted(values))


def _wins(a: Candidate, b: Candidate) -> tuple[Candidate, Candidate, str]:
    if b.superseded_by == a.evidence.source:
        return a, b, f"{a.evidence.source} supersedes {b.evidence.source}"
    if a.superseded_by == b.evidence.source:
        return b, a, f"{b.evidence.source} supersedes {a.evidence.source}"
    ra, rb = TIER_RANK[a.evidence.trust_tier], TIER_RANK[b.evidence.trust_tier]
    if ra != rb:
        win, lose = (a, b) if ra < rb else (b, a)
        return win, lose, f"{win.evidence.trust_tier} outranks {lose.evidence.trust_tier}"
    win, lose = (a, b) if a.evidence.effective_date >= b.evidence.effective_date else (b, a)
    return win, lose, f"newer ({win.evidence.effective_date} over {lose.evidence.effective_date})"


def detect_conflicts(candidates: list[Candidate]) -> list[Conflict]:
    """Two sources on the same topic (section) that state different figures in the same unit."""
    conflicts: list[Conflict] = []
    seen: set[tuple[str, str]] = set()
    usable = [c for c in candidates if not c.quarantine and c.section]
    for a, b in combinations(usable, 2):
        if a.evidence.source == b.evidence.source:
            continue
        if a.section.strip().lower() != b.section.strip().lower():
            continue
        fa, fb = figures(a.evidence.text), figures(b.evidence.text)
        clash = [u for u in fa.keys() & fb.keys() if fa[u] != fb[u]]
        pair = tuple(sorted((a.evidence.chunk_id, b.evidence.chunk_id)))
        if not clash or pair in seen:
            continue
        seen.add((pair[0], pair[1]))
        win, lose, why = _wins(a, b)
        if win.superseded_by:
            continue  # a stale source winning over a worse one is not news to the planner
        unit = clash[0]
        conflicts.append(
            Conflict(
                topic=a.section,
                winner=win.evidence.chunk_id,
                loser=lose.evidence.chunk_id,
                winner_says=_say(figures(win.evidence.text)[unit], unit),
                loser_says=_say(figures(lose.evidence.text)[unit], unit),
                why=why,
            )
        )
    return conflicts


def _age(effective: str, today: date) -> int:
    try:
        return (today - date.fromisoformat(effective)).days
    except ValueError:
        return 1 << 30


def curate(candidates: list[Candidate], k: int, today: date | None = None) -> Retrieval:
    """Filter, rank and explain: the top ``k`` chunks a planner may see."""
    today = today or date.today()
    filtered: list[Filtered] = []
    kept: list[Candidate] = []
    for c in candidates:
        reason = (
            f"superseded by {c.superseded_by}"
            if c.superseded_by
            else f"quarantined: {c.quarantine}"
            if c.quarantine
            else f"expired on {c.expires}"
            if c.expires_before(today)
            else ""
        )
        if reason:
            filtered.append(Filtered(chunk_id=c.evidence.chunk_id, reason=reason))
        else:
            kept.append(c)
    trusted_answer = any(
        c.evidence.trust_tier in TRUSTED and c.evidence.score >= MIN_RELEVANT for c in kept
    )
    if trusted_answer:
        for c in [c for c in kept if c.evidence.trust_tier not in TRUSTED]:
            kept.remove(c)
            filtered.append(
                Filtered(
                    chunk_id=c.evidence.chunk_id,
                    reason=f"{c.evidence.trust_tier} source; a trusted source answers",
                )
            )
    conflicts = detect_conflicts(candidates)
    losers = {x.loser for x in conflicts}
    ranked = sorted(
        kept,
        key=lambda c: (
            -(
                c.evidence.score
                + LEXICAL_WEIGHT * c.lexical
                + TIER_BONUS[c.evidence.trust_tier]
                - (0.05 if c.evidence.chunk_id in losers else 0.0)
            ),
            # Freshness breaks ties: of two equally good chunks, the newer comes first.
            _age(c.evidence.effective_date, today),
        ),
    )
    return Retrieval(
        evidence=[c.evidence for c in ranked[:k]], filtered=filtered, conflicts=conflicts
    )
