"""The pages ``keel bench --out`` and ``keel eval --out`` write: what wrote them, every figure,
and nothing lost when a later run measures only part of it (issue 22: never edited by hand)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from evals.bench import write_bench_page
from evals.runner import PAGES, SUITES, write_suite_page
from evals.scorecard import write_scorecard

DAY = datetime.date(2026, 12, 6)


def test_a_bench_run_replaces_its_section_and_keeps_the_others(tmp_path: Path) -> None:
    write_bench_page({"tools": {"tool_overhead_ms": 0.4}, "record": {"p50_ms": 0.3}}, tmp_path)
    written = write_bench_page(
        {"tools": {"tool_overhead_ms": 0.2, "calls": 2000}}, tmp_path, today=DAY
    )
    kept = json.loads(Path(written["json"]).read_text())
    assert kept["tools"]["figures"] == {"tool_overhead_ms": 0.2, "calls": 2000}
    assert kept["tools"]["measured"]["date"] == "2026-12-06"
    assert kept["record"]["figures"] == {"p50_ms": 0.3}, "a bench not run keeps its figures"
    page = Path(written["markdown"]).read_text()
    assert "Written by `keel bench --only NAME --out docs`" in page
    assert "do not edit by hand" in page
    assert "| `tool_overhead_ms` | 0.2 | < 1 ms median | met | `tools.tool_overhead_ms` |" in page
    assert "| `step_overhead_ratio` | not measured |" in page, "never a guess for a bench not run"
    assert "## record" in page and "| `p50_ms` | 0.3 |" in page
    assert "`keel bench --only tools --out docs`, on 2026-12-06" in page


def test_the_engine_bench_keeps_its_own_page(tmp_path: Path) -> None:
    written = write_bench_page({"engine": {"throughput": 1.0}, "meter": {"n": 1}}, tmp_path)
    assert list(json.loads(Path(written["json"]).read_text())) == ["meter"]


def test_every_suite_without_a_writer_of_its_own_gets_a_page(tmp_path: Path) -> None:
    assert set(PAGES) <= set(SUITES)
    result = {
        "domain": "incident_desk",
        "keel": {
            "transient": {"runs": 30, "success_rate": 1.0, "by_request": {"page": {"ok": 30}}}
        },
        "plain": {"transient": {"runs": 30, "success_rate": 0.3}},
    }
    written = write_suite_page("faults", result, tmp_path, "domains.incident_desk:IncidentDesk")
    assert Path(written["markdown"]).name == "eval-faults-incident_desk.md"
    page = Path(written["markdown"]).read_text()
    command = "KEEL_DOMAIN=domains.incident_desk:IncidentDesk keel eval --suite faults --out docs"
    assert f"Written by `{command}` (evals/faults_eval.py); do not edit by hand." in page
    assert "| `transient` | plain | 30 | 0.3 |  |  |  |" in page, "read first: profile by agent"
    assert "## plain" in page and "| `transient` | 30 | 0.3 |" in page, "then every figure"
    assert "| `page` | 30 |" in page, "an object of rows is one table"
    assert json.loads(Path(written["json"]).read_text()) == result


def test_another_domains_scorecard_does_not_overwrite_the_support_desks(tmp_path: Path) -> None:
    for domain in ("support_desk", "incident_desk"):
        write_scorecard({"domain": domain}, tmp_path, render=lambda card: card["domain"])
    assert (tmp_path / "scorecard.md").read_text().endswith("\n\nsupport_desk")
    assert (tmp_path / "scorecard-incident_desk.md").read_text().endswith("\n\nincident_desk")
    write_scorecard({"domain": "support_desk"}, tmp_path, render=str, stem="scorecard-real")
    assert (tmp_path / "scorecard-real.json").exists()


def test_a_scorecard_names_the_command_that_wrote_it(tmp_path: Path) -> None:
    command = "KEEL_DOMAIN=domains.incident_desk:IncidentDesk keel eval --suite scenarios --k 3"
    write_scorecard({"domain": "incident_desk"}, tmp_path, render=str, command=command)
    page = (tmp_path / "scorecard-incident_desk.md").read_text()
    assert page.startswith(f"Written by `{command}` (evals/scorecard.py); do not edit by hand.")


def test_a_strided_crash_sweep_says_what_it_covered(tmp_path: Path) -> None:
    result = {"domain": "support_desk", "every": 10, "sqlite": {"refund": {"boundaries": 121}}}
    written = write_suite_page("crashes", result, tmp_path, "domains.support_desk:SupportDesk")
    page = Path(written["markdown"]).read_text()
    assert "Swept: sqlite; every 10th boundary (`--every 10`)." in page
