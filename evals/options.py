"""What ``keel eval`` is asked to measure, beside the settings of the Keel it measures.

The eval verb (``evals/cli.py``) builds one :class:`EvalOptions` from its flags; what no flag
sets comes from a ``KEEL_EVAL_*`` environment variable (``KEEL_EVAL_RUNS``, ``KEEL_EVAL_SWEEP_K``:
the sizes no flag sets), then the defaults here. ``.env`` is the product's settings file and is
not read here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EvalOptions(BaseSettings):
    """The eval suites' options: sizes, sweeps, scenario files and where figures are written.

    Example:
        >>> EvalOptions(k=5, compounding_k=5).model_dump(include={"k", "runs"})
        {'runs': 200, 'k': 5}
    """

    model_config = SettingsConfigDict(env_prefix="KEEL_EVAL_", extra="forbid", frozen=True)

    runs: int = Field(default=200, ge=1, description="Runs per profile in the faults eval.")
    k: int = Field(default=3, ge=1, le=50, description="Runs per scenario and agent (pass^k).")
    scenarios: list[Path] = Field(
        default_factory=list,
        description="Scenario files or folders for the scorecard (default: the domain's).",
    )
    plot: bool = Field(
        default=False, description="Sweep fault rates in the scorecard and plot them (PNG)."
    )
    sweep_k: int = Field(
        default=10, ge=1, le=100, description="Seeds per scenario and fault rate in the sweep."
    )
    compounding_runs: int = Field(
        default=10, ge=1, le=200, description="Runs (model seeds) per agent and point of the curve."
    )
    compounding_k: int = Field(
        default=5, ge=1, le=50, description="The k of pass^k in the compounding curve."
    )
    out: Path | None = Field(
        default=None, description="Where eval tables and plots are written (default: HOME/...)."
    )
    budgets_engine: bool = Field(
        default=False,
        description="The budgets eval also runs 20 threads of one team on the engine (Aegra, "
        "PostgreSQL, Redis; a few minutes).",
    )
    crash_backends: list[str] = Field(
        default_factory=list,
        description="Crash sweep: the backends to sweep (default: sqlite and postgres).",
    )
    crash_requests: list[str] = Field(
        default_factory=list,
        description="Crash sweep: the requests to sweep (default: the four that act).",
    )
    crash_every: int = Field(
        default=1, ge=1, description="Crash sweep: kill at every k-th boundary (1: all)."
    )
    crash_jobs: int = Field(
        default=1, ge=1, le=16, description="Crash sweep: kill points run at the same time."
    )
