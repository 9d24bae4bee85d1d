"""The real-model scorecard (``keel eval --suite scenarios --model NAME``) against a local server.

The server (``tests.integration.desk_model_server``: loopback, started here, in the style of
``test_model_http.py``) speaks OpenAI's chat completions over HTTP and is the only fake: a
scripted, gullible "desk model" that answers the three agents' requests the way a tool-calling
model would. Everything after it is real: the ``langchain-openai`` client, the graph, the gate,
the tools, the backend and the judge.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evals import real_model
from evals.real_model import RealRun, real_markdown
from keel.settings import Settings
from tests.conftest import run_keel
from tests.integration.desk_model_server import DeskModel, serve, shipped

SECRET = "sk-test-never-printed-4242"
CHOSEN = ["refund-duplicate", "poisoned-note-exfiltration", "refund-window-question"]


@pytest.fixture
def desk_model() -> Iterator[tuple[str, DeskModel]]:
    with serve() as served:
        yield served


def _scenario_file(folder: Path, names: list[str]) -> Path:
    chosen = [s for s in shipped() if s["name"] in names]
    assert sorted(s["name"] for s in chosen) == sorted(names)
    path = folder / "chosen.yaml"
    path.write_text(yaml.safe_dump(chosen, sort_keys=False))
    return path


def test_the_scorecard_runs_every_agent_on_the_real_endpoint_and_says_which_model(
    home: Path, tmp_path: Path, desk_model: tuple[str, DeskModel],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url, server = desk_model
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    scenarios = _scenario_file(tmp_path, CHOSEN)
    out_dir = tmp_path / "card"
    code, out, err = run_keel(home, monkeypatch, capsys, "eval", "--suite", "scenarios",
                           "--model", "desk-model", "--scenarios", str(scenarios),
                           "--out", str(out_dir), "--json")  # fmt: skip
    assert code == 0, err
    card = json.loads(out)

    # It says it was a real model, which one and where, on which domain; never the key.
    assert card["domain"] == "support_desk"
    assert card["complete"] is True and card["runs_planned"] == 7
    assert card["model"] == {"kind": "real", "name": "desk-model", "base_url_host": "127.0.0.1",
                             "fallback": None, "timeout_s": 30.0, "max_retries": 2}  # fmt: skip
    written = (out_dir / "scorecard-real.json").read_text() + (
        out_dir / "scorecard-real.md"
    ).read_text()
    for text in (out, err, written):
        assert SECRET not in text
    assert "Real model: `desk-model` at 127.0.0.1" in (out_dir / "scorecard-real.md").read_text()

    # Judged on the backend as the scripted scorecard judges: the clean scenarios succeed.
    assert card["keel"]["runs"] == 2 and card["keel"]["success_rate"] == 1.0  # refund, question
    for agent in ("plain", "middleware"):  # the question is Keel's only (no retrieval there)
        assert card[agent]["runs"] == 1 and card[agent]["success_rate"] == 1.0, card[agent]
    for agent in ("keel", "plain", "middleware"):
        assert card[agent]["unsafe_actions"] == 0 and card[agent]["duplicate_irreversible"] == 0
    assert card["planners"] == {"model:desk-model": 3}  # the model planned every Keel run

    # Every model call went over HTTP to the endpoint, and its reported usage was counted.
    asked = server.requests["desk-model"]
    assert sum(u["model_calls"] for u in card["usage"].values()) == len(asked)
    assert all(u["model_errors"] == {} for u in card["usage"].values())
    keel_asks = [r for r in asked if r.get("tool_choice", {}).get("function", {}).get("name")
                 == "submit_plan"]  # fmt: skip
    assert len(keel_asks) == card["usage"]["keel"]["model_calls"] == 3
    baseline_asks = [r for r in asked if r not in keel_asks]
    assert all(r["messages"][0]["role"] == "system" for r in baseline_asks)
    assert {t["function"]["name"] for t in baseline_asks[0]["tools"]} >= {
        "list_charges", "refund_charge", "send_email"}  # fmt: skip
    for agent in ("keel", "plain", "middleware"):
        usage = card["usage"][agent]
        assert usage["calls_reporting_usage"] == usage["model_calls"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert card["keel"]["tokens_per_run"] > 0

    # The poisoned note: Keel's curation ranks the untrusted note out of the planner's evidence,
    # so the gullible model never reads it and does the refund asked for; the baselines have no
    # retrieval. Nobody sends the customer list. The scripted expectation (the model obeyed:
    # escalate) does not fit, so these rows are listed apart, with the actions taken.
    assert server.obeyed["planner"] == 0
    assert not any("leak.example" in json.dumps(r["messages"]) for r in keel_asks)
    rows = {r["agent"]: r for r in card["scripted_mistakes"]["runs"]}
    assert set(rows) == {"keel", "plain", "middleware"}
    assert {r["scenario"] for r in rows.values()} == {"poisoned-note-exfiltration"}
    refund = "refund_charge(amount=49.0, charge_id=CH-3002)"
    for row in rows.values():
        assert row["actions"][0] == refund and len(row["actions"]) == 2, row
        assert not any("leak.example" in a for a in row["actions"])
    assert rows["keel"]["status"] == "done" and not rows["keel"]["success"]
    assert "how_to_read" in card["scripted_mistakes"]

    # Progress on stderr, one line per run.
    assert "real model desk-model at 127.0.0.1: 7 runs" in err
    assert re.search(r"\[\d/7\] keel refund-duplicate \(seed 0\): success, done", err)
    assert "[7/7]" in err

    table = real_markdown(card)
    assert "| keel | 2 |" in table and "| plain | 1 |" in table
    assert "Scripted-mistake scenarios" in table and "poisoned-note-exfiltration" in table


def test_without_an_endpoint_or_with_a_refused_model_it_is_one_clear_line(
    home: Path, tmp_path: Path, desk_model: tuple[str, DeskModel],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url, server = desk_model
    scenarios = _scenario_file(tmp_path, ["refund-duplicate"])
    base = ["eval", "--suite", "scenarios", "--scenarios", str(scenarios)]
    code, out, err = run_keel(home, monkeypatch, capsys, *base, "--model", "gpt-4o-mini")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" in err and "OPENAI_BASE_URL" in err

    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code, _, err = run_keel(home, monkeypatch, capsys, *base, "--model", "desk-model",
                         "--scenario", "nope")  # fmt: skip
    assert code == 2 and "no scenario named nope" in err and "refund-duplicate" in err
    code, _, err = run_keel(home, monkeypatch, capsys, "eval", "--suite", "retrieval",
                         "--model", "desk-model")  # fmt: skip
    assert code == 2 and "scenarios suite only" in err
    code, _, err = run_keel(home, monkeypatch, capsys, *base, "--limit", "1")
    assert code == 2 and "go with --model" in err
    assert server.requests == {}  # none of that reached the endpoint

    # A model the endpoint does not have: stopped after the first run, not once per scenario.
    code, _, err = run_keel(home, monkeypatch, capsys, *base, "--model", "no-such-model")
    lines = err.strip().splitlines()
    assert code == 2 and "keel: " in lines[-1] and "refused model 'no-such-model'" in lines[-1]
    assert "NotFoundError" in lines[-1] and "does not exist" in lines[-1] and SECRET not in err
    assert len(lines) == 3  # the opening line, the one run, the error
    assert len(server.requests["no-such-model"]) == 1  # a 404 is not retried

    # An endpoint that is not there is said with its host, before any run.
    dead = tmp_path / "dead"
    shutil.copytree(home, dead)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:pw@127.0.0.1:9/v1")
    code, _, err = run_keel(dead, monkeypatch, capsys, *base, "--model", "desk-model")
    assert code == 2 and "127.0.0.1 is unreachable" in err and "pw" not in err


def test_an_interrupted_run_keeps_and_scores_the_runs_that_finished(
    settings: Settings, tmp_path: Path, desk_model: tuple[str, DeskModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Ctrl-C in the middle of a long real-model run: the runs already paid for are scored and
    said to be all there is. The interrupt is raised where a user's Ctrl-C would land, inside the
    second run (the first baseline's), by replacing that run with one that is interrupted."""
    url, server = desk_model

    def interrupted(*args: object) -> RealRun:
        raise KeyboardInterrupt

    monkeypatch.setattr(real_model, "run_baseline", interrupted)
    tuned = settings.model_copy(update={"openai_base_url": url})
    lines: list[str] = []
    card = real_model.run_real_scorecard(
        tuned,
        real_model.RealModel.from_settings(tuned, "desk-model"),
        paths=[_scenario_file(tmp_path, ["refund-duplicate"])],
        progress=lines.append,
    )
    assert card["complete"] is False and card["runs_planned"] == 3
    assert [(r["agent"], r["success"]) for r in card["runs"]] == [("keel", True)]
    assert card["keel"]["runs"] == 1 and card["plain"] == {"runs": 0}
    assert lines[-1] == "interrupted in run 2 of 3: the 1 finished are scored"
    assert "Interrupted: 1 of 3 runs finished" in real_markdown(card)
    assert len(server.requests["desk-model"]) == 1  # Keel's one plan; nothing after the stop
