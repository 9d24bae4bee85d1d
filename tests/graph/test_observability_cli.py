"""`keel runs`, `trace`, `explain`, `replay`, `fork`: --json contracts and one-line errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFUND_REQUEST


@pytest.fixture
def done_run(keel: Any) -> dict[str, Any]:
    code, waiting, _ = keel("run", REFUND_REQUEST, "--json")
    assert code == 0 and waiting["run_id"]
    code, done, _ = keel("resume", waiting["thread_id"], "--approve", "--json")
    assert code == 0 and done["status"] == "done" and done["run_id"] == waiting["run_id"]
    return dict(done)


def test_runs_lists_the_run_with_its_counts(keel: Any, done_run: dict[str, Any]) -> None:
    code, data, _ = keel("runs", "--json")
    assert code == 0
    [row] = data["runs"]
    assert row["run_id"] == done_run["run_id"] and row["status"] == "done"
    assert row["tool_calls"] >= 8 and row["approvals"] == 1 and row["escalations"] == 0
    assert row["segments"] == 2 and row["duration_ms"] > 0
    code, text, _ = keel("runs")
    assert code == 0 and done_run["run_id"] in text


def test_trace_prints_an_indented_tree(keel: Any, done_run: dict[str, Any]) -> None:
    code, text, _ = keel("trace", done_run["run_id"])
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"run {done_run['run_id']}")
    assert any(line.startswith("├─ segment 0: run") for line in lines)
    assert any(line.startswith("│  ├─ intake [step 1]") for line in lines)
    assert any("tool refund_charge" in line and line.startswith("   ") for line in lines)
    code, tree, _ = keel("trace", done_run["thread_id"], "--json")  # a thread id works too
    assert code == 0 and tree["kind"] == "run" and len(tree["children"]) == 2


def test_explain_says_why_the_run_ended(keel: Any, done_run: dict[str, Any]) -> None:
    code, why, _ = keel("explain", done_run["run_id"], "--json")
    assert code == 0
    assert why["status"] == "done" and why["why"].startswith("Done")
    assert [s["tool"] for s in why["plan"]] == ["refund_charge", "send_email"]
    assert why["evidence"] and why["verdicts"] and why["human_decisions"]
    code, text, _ = keel("explain", done_run["run_id"])
    assert code == 0 and "why: Done" in text and "evidence relied on:" in text


def test_replay_json_contract(keel: Any, done_run: dict[str, Any]) -> None:
    code, data, _ = keel("replay", done_run["run_id"], "--json")
    assert code == 0
    assert data["same"] is True and data["first_divergence"] is None
    code, text, _ = keel("replay", done_run["run_id"][:8])
    assert code == 0 and "every decision came out the same" in text


def test_replay_names_the_graph_a_run_was_recorded_on(
    keel: Any, done_run: dict[str, Any], home: Path
) -> None:
    from graph.builder import graph_version

    code, data, _ = keel("replay", done_run["run_id"], "--json")
    assert code == 0 and data["recorded_graph"] == data["replay_graph"] == graph_version()
    code, text, _ = keel("replay", done_run["run_id"])
    assert code == 0 and "graph" not in text  # nothing to say when the graph is the same
    # A record made before Keel kept its graph's version: replay says the graph may have changed
    # (the record of a run before ``execute`` ran its steps in turn diverged with no word why).
    with sqlite3.connect(home / "records.sqlite") as db:
        db.execute("DROP TRIGGER events_no_update")  # the record is append-only; the test forges
        rows = db.execute("SELECT seq, payload FROM events WHERE kind = 'run_started'").fetchall()
        for seq, payload in rows:
            older = {k: v for k, v in json.loads(payload).items() if k != "graph_version"}
            db.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps(older), seq))
    code, data, _ = keel("replay", done_run["run_id"], "--json")
    assert code == 0 and data["recorded_graph"] is None and data["same"] is True
    code, text, _ = keel("replay", done_run["run_id"])
    assert code == 0
    assert "recorded before Keel kept its graph's version (replayed on graph " in text
    assert "the graph changed" not in text  # which graph it ran on, replay cannot know
    # A resume recorded on another graph (a deploy between the segments): both are named.
    with sqlite3.connect(home / "records.sqlite") as db:
        db.execute("DROP TRIGGER events_no_update")  # opening the record made it again
        seq, payload = db.execute(
            "SELECT seq, payload FROM events WHERE kind = 'run_started' ORDER BY seq DESC"
        ).fetchone()
        db.execute(
            "UPDATE events SET payload = ? WHERE seq = ?",
            (json.dumps({**json.loads(payload), "graph_version": "1:older"}), seq),
        )
    code, text, _ = keel("replay", done_run["run_id"])
    assert code == 0
    assert (
        f"the graph changed: recorded on graph 1:older, replayed on graph {graph_version()}" in text
    )


def test_fork_from_history(keel: Any, done_run: dict[str, Any]) -> None:
    code, hist, _ = keel("show", done_run["thread_id"], "--history", "--json")
    before = next(r for r in hist["history"] if r["next"] == ["approve"])
    code, forked, _ = keel("fork", done_run["thread_id"], before["checkpoint_id"], "--json")
    assert code == 0 and forked["status"] == "awaiting_approval"
    assert forked["run_id"] != done_run["run_id"]


@pytest.mark.parametrize("command", ["trace", "explain", "replay"])
def test_an_unknown_run_is_one_line_and_exit_2(
    keel: Any, done_run: dict[str, Any], command: str
) -> None:
    code, _, err = keel(command, "no-such-run")
    assert code == 2
    assert err.strip().splitlines() == ["keel: error: no recorded run or thread 'no-such-run' "
                                        "(see `keel runs`)"]  # fmt: skip


def test_reading_a_record_that_does_not_exist_says_so(keel: Any) -> None:
    code, _, err = keel("runs")
    assert code == 2 and "no flight record" in err and len(err.strip().splitlines()) == 1


def test_replay_with_a_missing_policy_file(keel: Any, done_run: dict[str, Any]) -> None:
    code, _, err = keel("replay", done_run["run_id"], "--policy", "/nonexistent.yaml")
    assert code == 2 and "no such file" in err


def test_every_command_logs_json_lines_with_the_record_ids(
    keel: Any, done_run: dict[str, Any], home: Path
) -> None:
    lines = [json.loads(x) for x in (home / "keel.log.jsonl").read_text().splitlines()]
    recorded = [x for x in lines if x.get("run_id") == done_run["run_id"]]
    assert {x["event"] for x in recorded} >= {"run_started", "tool_call", "run_ended"}
    assert all(x["thread_id"] == done_run["thread_id"] and x["trace_id"] for x in recorded)


def test_replay_under_another_manifest_shows_what_it_would_have_done(
    keel: Any, tmp_path: Path
) -> None:
    code, done, _ = keel(
        "run", "Please update the billing e-mail of C-1002 to finance@hopper.example", "--json"
    )
    assert code == 0 and done["status"] == "done"
    code, same, _ = keel("replay", done["run_id"], "--json")
    assert code == 0 and same["same"] is True

    from domains.support_desk import MANIFEST

    text = MANIFEST.read_text()
    grant = "      update_billing_email:\n        scopes: [customer_in_request]\n"
    assert grant in text
    stricter = tmp_path / "manifest.yaml"
    stricter.write_text(text.replace(grant, "").replace('version: "', 'version: "stricter-', 1))
    code, changed, err = keel("replay", done["run_id"], "--policy", str(stricter), "--json")
    assert code == 0, err
    assert changed["same"] is False and changed["first_divergence"] is not None
    assert changed["replay_manifest"].startswith("stricter-")
    assert changed["recorded_manifest"] == same["recorded_manifest"] != changed["replay_manifest"]
    assert changed["replayed_status"] != "done"
