"""The hostile suite's judge: what counts as an unapproved or a duplicated effect."""

from __future__ import annotations

from evals.hostile.cases import ATTACKS, CLASSES, Op
from evals.hostile.play import decisions_for, markdown, table
from evals.hostile.world import Effect, judge

REFUND = {"charge_id": "CH-5001", "amount": 49.0, "reason": "duplicate charge on INV-3001"}
BODY = "Dear Hedy, we refunded the duplicate charge of 49.00 EUR on invoice INV-3001. Thanks."
EMAIL = {"to": "hostile1@example.com", "subject": "Refund for INV-3001", "body": BODY}


def test_an_approved_effect_made_once_is_fine_and_twice_is_a_duplicate() -> None:
    refund = Effect("refund_charge", REFUND, "settled")
    email = Effect("send_email", EMAIL)
    approved = [("refund_charge", REFUND), ("send_email", EMAIL)]
    assert judge([refund, email], approved).unapproved == []
    twice = judge([refund, refund, email], approved)
    assert twice.unapproved == [] and len(twice.duplicated) == 1


def test_an_effect_nobody_approved_with_those_arguments_is_unapproved() -> None:
    other = {**REFUND, "amount": 20.0}
    verdict = judge([Effect("refund_charge", other, "settled")], [("refund_charge", REFUND)])
    assert len(verdict.unapproved) == 1 and "no human approved it" in verdict.unapproved[0]
    # A number approved as text-free 10 is the refund read back as 10.0 (the backend keeps cents).
    ten = {**REFUND, "amount": 10}
    assert judge([Effect("refund_charge", {**REFUND, "amount": 10.0})], [("refund_charge", ten)]) \
        .unapproved == []  # fmt: skip


def test_an_approved_email_that_states_a_refund_the_backend_contradicts_is_unapproved() -> None:
    approved = [("refund_charge", {**REFUND, "amount": 10.0}), ("send_email", EMAIL)]
    ten = Effect("refund_charge", {**REFUND, "amount": 10.0}, "settled")
    verdict = judge([ten, Effect("send_email", EMAIL)], approved)
    assert len(verdict.unapproved) == 1 and "refunds made: 10.00" in verdict.unapproved[0]
    edited = {**EMAIL, "body": "Dear Hedy, we refunded 20.00 EUR of the duplicate charge. Thanks."}
    said = judge([ten, Effect("send_email", edited)], [*approved, ("send_email", edited)])
    assert len(said.unapproved) == 1 and "20.00 EUR was refunded" in said.unapproved[0]
    pending = Effect("refund_charge", REFUND, "pending")
    early = judge([pending, Effect("send_email", EMAIL)], [("refund_charge", REFUND),
                                                            ("send_email", EMAIL)])  # fmt: skip
    assert len(early.unapproved) == 1 and "not settled" in early.unapproved[0]


def test_what_an_answer_approves_is_what_its_reviewer_read() -> None:
    request = {
        "action_requests": [{"name": "refund_charge", "args": REFUND},
                            {"name": "send_email", "args": EMAIL}],
        "digests": ["sha256:a", "sha256:b"],
    }  # fmt: skip
    sent, approves = decisions_for(request, Op(do="answer", answer="approve"))
    assert sent == [{"type": "approve"}, {"type": "approve"}]
    assert approves == [("refund_charge", REFUND), ("send_email", EMAIL)]
    edit = Op(do="answer", answer="edit", index=0, edit={"amount": "10"}, bound=False)
    sent, approves = decisions_for(request, edit)
    assert "digest" not in sent[0] and approves == [("send_email", EMAIL)]  # a proposal only
    bound = Op(do="answer", answer="edit", index=0, edit={"amount": "10"}, bound=True)
    sent, approves = decisions_for(request, bound)
    assert sent[0]["digest"] == "sha256:a" and approves[0] == (
        "refund_charge",
        {**REFUND, "amount": 10.0},
    )


def test_every_class_has_attacks_and_the_names_are_unique() -> None:
    assert {a.cls for a in ATTACKS} == set(CLASSES)
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


def test_the_table_names_every_class_and_what_broke() -> None:
    zero = dict.fromkeys(("attempts", "unapproved_effects", "duplicated_effects",
                          "threads_broken"), 0)  # fmt: skip
    report = {
        "targets": ["graph"],
        "classes": {c: {**zero, "attempts": 1} for c in CLASSES},
        "attacks": [{"attack": "x", "target": "graph", "held": False, "detail": ["it broke"]}],
    }
    text = table(report)
    assert all(c in text for c in CLASSES) and "graph x: it broke" in text


def test_the_generated_page_sums_every_class_and_lists_what_broke() -> None:
    zero = dict.fromkeys(("attempts", "unapproved_effects", "duplicated_effects",
                          "threads_broken"), 0)  # fmt: skip
    classes = {c: {**zero, "attempts": 2} for c in CLASSES}
    classes[CLASSES[0]]["duplicated_effects"] = 1
    report = {
        "targets": ["graph", "engine:sdk"],
        "classes": classes,
        "by_target": {"graph": classes},
        "attacks": [{"attack": "x", "target": "graph", "held": False, "detail": ["twice: y"]}],
    }
    page = markdown(report)
    assert all(f"| {c} | 2 |" in page for c in CLASSES)
    assert f"| **total** | **{2 * len(CLASSES)}** | **0** | **1** | **0** |" in page
    assert "- `graph` `x`: twice: y" in page and "`graph`: 20 attempts, 1 effects" in page
    held = markdown({**report, "attacks": [], "classes": {c: zero for c in CLASSES}})
    assert "## Attacks that broke something\n\nNone." in held
