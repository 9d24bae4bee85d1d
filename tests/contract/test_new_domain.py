"""``keel new-domain`` writes a domain that passes the contract suite as generated.

The domain is written into a temporary directory, put on the path of a separate pytest process
(the suite's own session, as a user would run it), and held to every contract test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keel.cli import main
from keel.errors import BadRequest
from keel.newdomain import new_domain
from tests.unit.test_domain_author import keel_imports

REPO = Path(__file__).resolve().parents[2]


def test_a_bad_name_or_an_existing_folder_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("Order-Desk", "class", "1desk", "os"):
        with pytest.raises(BadRequest):
            new_domain(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    assert main(["new-domain", "taken", "--into", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error: new-domain:") and "exists" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "taken"]


def test_a_generated_domain_is_small_and_imports_keel_from_one_module(tmp_path: Path) -> None:
    """A newcomer reads the whole domain: at most 200 non-blank lines of Python, and every import
    of Keel from the one seam module (``graph.domain``); its own modules are relative imports."""
    folder, _ = new_domain("order_desk", tmp_path)
    python = sorted(folder.rglob("*.py"))
    assert [p.name for p in python] == ["__init__.py", "backend.py", "domain.py"]
    lines = sum(
        1 for p in python for line in p.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    assert lines <= 200, f"keel new-domain writes {lines} non-blank lines of Python"
    assert set(keel_imports(python)) == {"graph.domain"}


@pytest.mark.integration
def test_a_generated_domain_passes_the_contract_suite(tmp_path: Path) -> None:
    folder, spec = new_domain("order_desk", tmp_path)
    assert spec == "order_desk:OrderDesk"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "__init__.py", "attacks.yaml", "backend.py", "contract.yaml",
        "corpus/docs/archiving-policy.md", "corpus/docs/runbook-archive-item.md",
        "corpus/manifest.yaml", "domain.py", "permissions.yaml", "record.yaml",
        "scenarios/requests.yaml",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    env["LANGSMITH_TRACING"] = "false"
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(REPO / "pyproject.toml"),
         str(folder)], capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/contract",
         f"--keel-domain={spec}", "--deselect", "tests/contract/test_new_domain.py"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900,
    )  # fmt: skip
    tail = suite.stdout[-3000:]
    assert suite.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail


def test_a_generated_domains_eval_cases_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every suite has what it needs from the generated domain: its scenario (tagged for the
    faults suite), its attack cases and its record case, each fitting its schema and naming
    tools, profiles and scenarios the domain has."""
    from evals.attacks_eval import load_attacks
    from evals.record_eval import acting_case
    from evals.scenarios import load_scenarios
    from graph.domain import load_showcase, tool_registry
    from keel.settings import Settings

    _, spec = new_domain("shelf_desk", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings(home=tmp_path / "home", domain=spec, _env_file=None)  # type: ignore[call-arg]
    domain = load_showcase(spec)
    domain.prepare(settings, reset=True)
    tools = tool_registry(domain, settings)
    scenarios, problems = load_scenarios([settings.scenarios_dir], tools, domain)
    assert problems == [] and [s.tags for s in scenarios] == [["faults"]]
    cases = load_attacks(settings)
    assert {c.kind for c in cases.attacks.values()} == {
        "out_of_scope", "past_approval", "double_approval"
    }  # fmt: skip
    assert all(c.tool in (None, *tools.names()) for c in cases.attacks.values())
    acting = acting_case(settings, domain)
    assert acting.request == cases.acting and acting.deny in tools
    assert domain.fault_profiles() == {} and domain.commands() == {}  # DomainDefaults
    assert all(spec.name in tools for spec in domain.tools(settings))  # declared, then wrapped
