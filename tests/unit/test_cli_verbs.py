"""The ``keel`` command's table of verbs: each verb helps, Keel's own and the evals' alike, and the
eval verb's options come from its flags first, then ``KEEL_EVAL_*``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import keel.cli
from evals.cli import BENCH, EVAL
from evals.options import EvalOptions
from keel.cli import VERBS, Verb, main, verbs

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "run", "resume", "recover", "show", "fork", "domain", "new-domain", "seed", "health",
    "ingest", "demo", "runs", "usage", "trace", "explain", "replay", "events", "access",
    "eval", "bench",
}  # fmt: skip


def test_every_verb_is_in_the_table_once_and_the_evals_come_from_the_entry_points() -> None:
    table = verbs()
    assert set(table) == EXPECTED
    assert len({v.name for v in VERBS}) == len(VERBS)
    assert table["eval"] is EVAL and table["bench"] is BENCH
    assert not {"eval", "bench"} & {v.name for v in VERBS}  # not the runtime's own


@pytest.mark.parametrize("argv", [[], *([name] for name in sorted(EXPECTED))])
def test_keel_and_each_verb_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keel {' '.join(argv)}".rstrip())
    assert "--json" in out and "--domain" in out


def _loaded_after(argv: list[str]) -> dict[str, object]:
    """What ``main(argv)`` printed and whether it read the entry points, in a new interpreter."""
    code = (
        "import contextlib, io, json, sys\n"
        "from keel.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(json.loads(sys.argv[1]))\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'out': out.getvalue(), 'evals': 'evals' in sys.modules,\n"
        "                  'metadata': 'importlib.metadata' in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize(
    "argv", [["show", "--help"], ["--json", "--domain", "x:Y", "run", "--help"], ["resume", "-h"]]
)
def test_a_verb_of_keels_own_reads_no_entry_point(argv: list[str]) -> None:
    """The entry points are read only for a verb that is not Keel's own, or ``keel --help``:
    scanning every installed distribution's metadata costs each command's cold start."""
    report = _loaded_after(argv)
    assert str(report["out"]).startswith("usage: keel ")
    assert report["evals"] is False and report["metadata"] is False, report


@pytest.mark.parametrize("argv", [["--help"], ["--json", "eval", "--help"]])
def test_keel_help_and_a_plugin_verb_read_the_entry_points(argv: list[str]) -> None:
    report = _loaded_after(argv)
    assert report["evals"] is True
    assert "bench" in str(report["out"]) if argv == ["--help"] else "--suite" in str(report["out"])


def test_an_entry_point_may_not_take_the_name_of_keels_own_verb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A plugin named like an own verb would be ignored by the commands that never read the
    # entry points: refused where they are read instead of half-applied.
    impostor = Verb("run", "not keel's run", lambda args, settings: None)
    monkeypatch.setattr(keel.cli, "IMPOSTOR", impostor, raising=False)
    point = EntryPoint(name="run", value="keel.cli:IMPOSTOR", group="keel.verbs")
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [point])
    with pytest.raises(TypeError, match="keel's own verb"):
        verbs()


def test_the_keel_program_exits_with_mains_code_its_objects_frozen_its_gc_tuned(
    tmp_path: Path,
) -> None:
    """``keel`` (the console script: ``keel.cli.console``) ends with main's exit code and its
    one-line error, its young generation collected less often, every object frozen out of the
    collector before the interpreter's exit."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count(), 'young',\n"
        "                              gc.get_threshold()[0], file=sys.stderr))\n"
        "sys.argv = ['keel', 'show', 'NO-SUCH-THREAD', '--json']\n"
        "from keel.cli import console\n"
        "console()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(tmp_path), LANGSMITH_TRACING="false")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "keel: error: no thread NO-SUCH-THREAD" in done.stderr
    frozen = int(done.stderr.split("frozen ")[1].split()[0])
    assert frozen > 100_000  # LangGraph's and pydantic's objects, at least
    assert int(done.stderr.split("young ")[1].split()[0]) == keel.cli.GC_YOUNG > 700
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["keel"] == "keel.cli:console"


def test_the_eval_options_take_a_flag_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_EVAL_RUNS", "30")
    monkeypatch.setenv("KEEL_EVAL_K", "7")
    options = EvalOptions(k=2)
    assert (options.runs, options.k, options.sweep_k) == (30, 2, 10)
    with pytest.raises(ValueError, match="runz"):
        EvalOptions(runz=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("field", ["k", "compounding_k", "compounding_runs"])
def test_the_eval_options_keep_their_upper_bounds(field: str) -> None:
    """The bounds ``Settings.eval_*`` had: a pass^k of 1000 is refused in one line."""
    from pydantic import ValidationError

    from evals.options import EvalOptions

    with pytest.raises(ValidationError, match="less than or equal"):
        EvalOptions(**{field: 100_000})
