"""The rule that decides what a digest-less answer approves, and the check of an edit's plan.

Pure functions over a review log (``graph.approval.shown_entry``, ``blind_refusal``) and over a
plan (``agents.validator.edit_problems``, ``stated``; ``agents.runbooks.fill_runbook`` with an
edit pinned), with hypothesis where the input is a user's.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agents.runbooks import fill_runbook
from agents.validator import edit_problems, stated
from graph.approval import blind_refusal, request_identity, shown_entry
from graph.state import Edit, Evidence, Reviewer
from graph.wire import ApprovalRequest
from retrieval.corpus import RunbookStep
from stores.review_log import MemoryReviewLog, ReviewEntry
from tests.builders import email_step, plan, refund_step

A, B = ["sha256:a1", "sha256:a2"], ["sha256:a1", "sha256:b2"]
ANN = Reviewer(name="ann", authenticated=True)
MALLORY = Reviewer(name="mallory", authenticated=True)


def _request(entry: ReviewEntry) -> ApprovalRequest:
    return {
        "action_requests": [],
        "review_configs": [],
        "digests": list(entry.digests),
        "steps": [],
        "manifest_version": None,
        "tainted_evidence": [],
        "request_id": entry.request_id,
        "revision": entry.revision,
        "changed_by": entry.by,
    }


def _show(log: MemoryReviewLog, key: str, digests: list[str]) -> ReviewEntry:
    entry = shown_entry(log.entries("t"), "t", key, digests)
    log.add("t", entry)
    return entry


def test_the_first_request_is_revision_0_and_any_blind_answer_counts() -> None:
    log = MemoryReviewLog()
    first = _show(log, "task-1", A)
    assert (first.revision, first.by) == (0, "")
    assert blind_refusal(log.entries("t"), _request(first), ANN) is None


def test_a_resumed_node_finds_the_request_it_raised() -> None:
    log = MemoryReviewLog()
    first = _show(log, "task-1", A)
    log.add("t", ReviewEntry("proposed", "x", by="mallory"))
    assert shown_entry(log.entries("t"), "t", "task-1", A) == first


def test_a_proposal_makes_a_new_request_only_its_proposer_may_answer_blind() -> None:
    log = MemoryReviewLog()
    first = _show(log, "task-1", A)
    log.add("t", ReviewEntry("proposed", f"{first.request_id}:mallory", by="mallory"))
    changed = _show(log, "task-2", B)
    assert (changed.revision, changed.by) == (1, "mallory")
    assert changed.request_id != first.request_id
    history = log.entries("t")
    assert blind_refusal(history, _request(changed), MALLORY) is None
    refused = blind_refusal(history, _request(changed), ANN)
    assert refused == (
        "the actions changed since you saw them: mallory proposed an edit; review them again"
    )
    # Refused once, asked again: the same reviewer's next blind answer is to what she was shown.
    log.add("t", ReviewEntry("acknowledged", "k", by="ann", revision=1))
    again = _show(log, "task-3", B)
    assert again.revision == 1 and again.request_id == changed.request_id
    assert blind_refusal(log.entries("t"), _request(again), ANN) is None
    assert blind_refusal(
        log.entries("t"), _request(again), Reviewer(name="bob", authenticated=True)
    )


def test_an_unknown_change_is_refused_to_everyone_once() -> None:
    log = MemoryReviewLog()
    _show(log, "task-1", A)
    rewritten = _show(log, "task-2", B)  # no proposal in between: a state write, a replan
    assert (rewritten.revision, rewritten.by) == (1, "")
    assert "planned again or rewritten" in str(
        blind_refusal(log.entries("t"), _request(rewritten), ANN)
    )


def test_an_engines_anonymous_caller_is_never_taken_for_the_proposer() -> None:
    anonymous = Reviewer(name="unauthenticated:anonymous", authenticated=False)
    log = MemoryReviewLog()
    _show(log, "task-1", A)
    log.add("t", ReviewEntry("proposed", "k", by=anonymous.name))
    changed = _show(log, "task-2", B)
    assert blind_refusal(log.entries("t"), _request(changed), anonymous) is not None


def test_back_to_what_was_shown_before_is_still_a_change() -> None:
    log = MemoryReviewLog()
    _show(log, "task-1", A)
    _show(log, "task-2", B)
    back = _show(log, "task-3", A)
    assert back.revision == 2


digest_lists = st.lists(st.sampled_from(["sha256:a", "sha256:b", "sha256:c"]), min_size=1)


@given(st.lists(st.tuples(digest_lists, st.sampled_from(["", "ann", "mallory"])), max_size=8))
def test_the_revision_counts_the_changes_and_the_id_follows_it(
    shows: list[tuple[list[str], str]],
) -> None:
    """Whatever the sequence of requests and proposals: the revision goes up by one exactly
    when the digests change, and two requests share an identity exactly when they share
    revision and digests."""
    log = MemoryReviewLog()
    seen: list[ReviewEntry] = []
    for i, (digests, proposer) in enumerate(shows):
        if proposer:
            log.add("t", ReviewEntry("proposed", f"p{i}", by=proposer))
        entry = _show(log, f"task-{i}", digests)
        if seen:
            last = seen[-1]
            changed = list(last.digests) != digests
            assert entry.revision == last.revision + changed
            if changed:
                assert entry.by == proposer
        else:
            assert entry.revision == 0
        assert entry.request_id == request_identity("t", entry.revision, digests)
        seen.append(entry)
    ids = {(e.revision, e.digests): e.request_id for e in seen}
    assert len(set(ids.values())) == len(ids)


def _partial(amount: float, email_body: str, purpose: str = "Refund") -> Any:
    return plan(
        refund_step(
            args={"charge_id": "CH-3002", "amount": amount, "reason": "dup"}, purpose=purpose
        ),
        email_step(args={"to": "ada@example.com", "subject": "Refund", "body": email_body}),
    )


EDIT = Edit(
    step=0,
    tool="refund_charge",
    before={"charge_id": "CH-3002", "amount": 49.0, "reason": "dup"},
    args={"charge_id": "CH-3002", "amount": 10.0, "reason": "dup"},
    by="ann",
)


def test_a_step_that_still_states_the_replaced_value_is_a_problem() -> None:
    stale = _partial(10.0, "We refunded 49.00 EUR on INV-2001.")
    (problem,) = edit_problems(stale, [EDIT])
    assert problem.startswith("step 2 (send_email): its body still states 49.0")
    assert edit_problems(_partial(10.0, "We refunded 10.00 EUR on INV-2001."), [EDIT]) == []
    assert edit_problems(_partial(10.0, "ok", purpose="Refund 49 EUR"), [EDIT]) != []


def test_a_plan_that_lost_the_edit_is_a_problem() -> None:
    assert edit_problems(_partial(49.0, "ok"), [EDIT]) == [
        "step 1 (refund_charge): the plan does not carry the edited arguments"
    ]


@given(st.floats(min_value=0.01, max_value=99999, allow_nan=False).map(lambda x: round(x, 2)))
def test_a_number_is_found_however_it_is_written_and_never_inside_another(amount: float) -> None:
    pattern = stated(amount)
    assert pattern is not None
    for text in (f"{amount:.2f} EUR", f"of {amount} EUR", f"({amount:.2f})"):
        assert pattern.search(text), text
    assert not pattern.search(f"CH-9{amount:.2f}".replace(".", ""))
    assert not pattern.search(f"{amount:.2f}5")


def test_a_data_runbook_filled_with_an_edit_says_the_edited_value_everywhere() -> None:
    runbook = Evidence.model_construct(chunk_id="rb:1", source="rb", intent="move")
    steps = [
        RunbookStep(
            tool="update_billing_email",
            args={"customer_id": "{records[customer][id]}", "email": "{entities[email]}"},
            purpose="Send invoices to {entities[email]}",
            effect="write",
        ),
        RunbookStep(
            tool="send_email",
            args={"to": "{entities[email]}", "subject": "Moved", "body": "Now {entities[email]}"},
            purpose="Tell them",
            effect="irreversible",
        ),
    ]
    records = {"customer": {"id": "C-1"}}
    filled = fill_runbook(runbook, steps, {"email": "a@x.io"}, records, {0: {"email": "b@y.io"}})
    assert not hasattr(filled, "reason")
    assert "a@x.io" not in str(filled.model_dump())  # type: ignore[union-attr]
    assert filled.steps[1].args == {  # type: ignore[union-attr]
        "to": "b@y.io",
        "subject": "Moved",
        "body": "Now b@y.io",
    }
