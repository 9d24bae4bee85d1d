"""The `keel` command in-process: --json contracts, and one clear line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from tests.builders import bench_results
from tests.conftest import REFUND_REQUEST


def _waiting(keel: Any) -> dict[str, Any]:
    code, data, _ = keel("run", REFUND_REQUEST, "--json")
    assert code == 0 and data["status"] == "awaiting_approval"
    return data


def test_run_json_contract(keel: Any) -> None:
    data = _waiting(keel)
    assert set(data) >= {"thread_id", "status", "planner", "pending"}
    assert data["planner"] == "runbook"
    assert data["pending"][0]["name"] == "refund_charge"
    assert data["pending"][0]["args"]["amount"] == 49.0
    assert data["pending"][0]["digest"].startswith("sha256:")


def test_resume_and_show(keel: Any, home: Path) -> None:
    thread = _waiting(keel)["thread_id"]
    code, data, _ = keel("resume", thread, "--approve", "--json")
    assert code == 0 and data["status"] == "done"
    code, data, _ = keel("show", thread, "--json")
    assert code == 0 and data["status"] == "done" and data["pending"] is None
    code, data, _ = keel("show", thread, "--history", "--json")
    assert code == 0 and len(data["history"]) > 5
    assert len(DemoBackend(home / "support_desk.sqlite").refunds()) == 1


def test_human_output_says_which_planner_ran(keel: Any) -> None:
    code, out, _ = keel("run", "What is our refund window?", "--no-input")
    assert code == 0
    assert "planner: runbook (the offline runbook planner; no model is configured)" in out
    assert "30 days" in out


def _fails(keel: Any, *argv: str, match: str) -> None:
    code, out, err = keel(*argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: error: "), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err


def test_empty_request(keel: Any) -> None:
    _fails(keel, "run", "  ", "--json", match="the request is empty")


def test_unknown_thread(keel: Any) -> None:
    _fails(keel, "show", "nope", match="no thread nope")
    _fails(keel, "resume", "nope", "--approve", match="no thread nope")


def test_resume_with_nothing_pending(keel: Any) -> None:
    code, data, _ = keel("run", "What is our refund window?", "--json")
    assert code == 0 and data["status"] == "done"
    _fails(keel, "resume", data["thread_id"], "--approve", match="not awaiting approval")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("{amount: 10}", "--edit is not valid JSON"),
        ("[1, 2]", "--edit must be a non-empty JSON object"),
        ('{"amount": 10, "to": "x@y.z"}', "no pending action has the argument(s)"),
        ('{"colour": "red"}', "no pending action has the argument(s) ['colour']"),
    ],
)
def test_malformed_edit_changes_nothing(keel: Any, home: Path, edit: str, match: str) -> None:
    thread = _waiting(keel)["thread_id"]
    _fails(keel, "resume", thread, "--edit", edit, match=match)
    _, data, _ = keel("show", thread, "--json")
    assert data["status"] == "awaiting_approval"
    assert DemoBackend(home / "support_desk.sqlite").refunds() == []


def test_missing_corpus_index(keel: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_COLLECTION", "never-ingested")
    _fails(keel, "run", REFUND_REQUEST, match="run `keel ingest`")


def test_missing_corpus_folder(keel: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_CORPUS_DIR", str(tmp_path / "nowhere"))
    _fails(keel, "ingest", match="no corpus manifest at")


def test_unreachable_model_endpoint(keel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KEEL_PLANNER_MODEL", "some-model")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    _fails(keel, "run", REFUND_REQUEST, match="unreachable")


def test_ingest_twice_writes_nothing_the_second_time(keel: Any) -> None:
    code, data, _ = keel("ingest", "--json")
    assert code == 0 and data["added"] == 0 and data["removed"] == 0 and data["unchanged"] > 0


def test_recover_refuses_what_is_not_a_crashed_run(keel: Any) -> None:
    _fails(keel, "recover", "nope", match="no thread nope")
    thread = _waiting(keel)["thread_id"]
    _fails(keel, "recover", thread, match="is waiting: for an approval (`keel resume`)")
    keel("resume", thread, "--approve", "--json")
    _fails(keel, "recover", thread, match="has finished")


def test_a_request_longer_than_the_planner_budget_is_refused(
    keel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_PLANNER_BUDGET_TOKENS", "500")
    code, data, _ = keel("run", "please refund " * 100, "--json")
    assert code == 0 and data["status"] == "refused"
    assert "half the planner's budget (500)" in data["answer"]


def test_access_json_lists_each_agents_grants(keel: Any) -> None:
    code, data, _ = keel("access", "--json")
    assert code == 0
    executor = {g["tool"]: g for g in data["agents"]["executor"]["grants"]}
    assert executor["refund_charge"]["approval"] == "required"
    assert executor["refund_charge"]["also_via"] == ["refund_charge_legacy"]
    assert data["agents"]["validator"]["effects"] == ["read"]
    assert all(g["effect"] == "read" for g in data["agents"]["planner"]["grants"])


def test_access_diff_shows_what_changed_since_a_git_ref(
    keel: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess

    from domains.support_desk import MANIFEST

    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    manifest = repo / "policies" / "manifest.yaml"
    shutil.copy(MANIFEST, manifest)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "reviewed"], check=True)
    text = manifest.read_text()
    manifest.write_text(
        text.replace("    effects: [read]\n    tools:\n      get_customer: {}\n      get_invoice",
                     "    effects: [read]\n    tools:\n      get_invoice", 1)
        .replace("limits: {amount: 1000}", "limits: {amount: 5000}")
    )  # fmt: skip
    monkeypatch.setenv("KEEL_POLICY_FILE", str(manifest))
    code, data, _ = keel("access", "--diff", "HEAD", "--json")
    assert code == 0
    assert sorted(data["removed"]) == [
        "executor: refund_charge (irreversible, billing) "
        "[approval required; four eyes; scope refund_within_charge; amount <= 1000; "
        "via refund_charge_legacy]",
        "planner: get_customer (read, crm)",
    ]
    assert any("amount <= 5000" in line for line in data["added"])
    code, _, err = keel("access", "--diff", "no-such-ref", "--json")
    assert code == 2 and "cannot read manifest.yaml at 'no-such-ref'" in err


def test_no_manifest_no_run(keel: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_POLICY_FILE", str(tmp_path / "missing.yaml"))
    code, _, err = keel("run", REFUND_REQUEST, "--json")
    assert code == 2 and "no permission manifest" in err and err.count("\n") == 1


def test_a_malformed_manifest_is_refused_naming_the_line(
    keel: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text('version: "x"\nagents:\n  executor:\n    effects: [read]\n    tools:\n'
                   "      refund_charge: {}\n")  # fmt: skip
    monkeypatch.setenv("KEEL_POLICY_FILE", str(bad))
    code, _, err = keel("access", "--json")
    assert code == 2 and f"{bad}:6: agents.executor.tools.refund_charge" in err


def test_bench_only_tools_json_prints_that_bench_bare(keel: Any) -> None:
    code, data, _ = keel("bench", "--only", "tools", "--json")
    assert code == 0
    assert data["events_told"] >= data["calls"] > 0  # the warm-up calls are told too
    assert data["tool_overhead_ms"] == pytest.approx(
        data["layered_median_ms"] - data["bare_median_ms"], abs=1e-3
    )
    assert "summary" not in data


def _canned_benches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bench replaced by its canned result: the full run's shape, without running one."""
    import evals.bench

    canned = bench_results()
    benches = {name: (lambda s, p, name=name: canned[name]) for name in evals.bench.BENCHES}
    monkeypatch.setattr(evals.bench, "BENCHES", benches)


def test_a_full_bench_json_carries_the_headline_figures_and_every_bench(
    keel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _canned_benches(monkeypatch)
    code, data, _ = keel("bench", "--json")
    assert code == 0
    assert data["step_overhead_ratio"] == 1.5 and data["checkpoint_write_ms"] == 0.6
    assert data["threads"] == 200 and data["threads_p95_ms"] == 7800.0
    assert data["peak_rss_mb"] > 0  # this process's own peak, measured
    assert data["summary"]["tool_overhead_ms"] == {
        "value": 0.3, "source": "tools.tool_overhead_ms", "target": "< 1 ms median", "met": True,
    }  # fmt: skip
    assert data["benches"] == bench_results()


def test_a_full_bench_prints_the_table_then_the_details(
    keel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _canned_benches(monkeypatch)
    code, out, _ = keel("bench")
    assert code == 0
    table, details = out.split("\n\ndetails:\n")
    assert table.splitlines()[0].split() == ["figure", "value", "target", "met"]
    assert len(table.splitlines()) == 14  # the header, 13 figures
    assert json.loads(details) == bench_results()


def test_bench_only_startup_prints_its_ratios_against_their_targets(
    keel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _canned_benches(monkeypatch)
    code, out, _ = keel("bench", "--only", "startup")
    assert code == 0
    table, details = out.split("\n\ndetails:\n")
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert set(rows) == {
        "run_vs_floor", "show_vs_floor", "resume_vs_floor", "help_vs_floor",
        "warm_refund_p50_ms", "runtime_install_mb",
    }  # fmt: skip
    assert rows["run_vs_floor"].split()[1] == "2.67" and rows["run_vs_floor"].endswith("NOT MET")
    assert rows["show_vs_floor"].endswith(" met")
    assert json.loads(details) == bench_results()["startup"]
