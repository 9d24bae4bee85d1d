"""The ``keel`` command's table of verbs: each verb helps, Keel's own and the evals' alike, and the
eval verb's options come from its flags first, then ``KEEL_EVAL_*``."""

from __future__ import annotations

import pytest

from evals.cli import BENCH, EVAL
from evals.options import EvalOptions
from keel.cli import VERBS, main, verbs

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
