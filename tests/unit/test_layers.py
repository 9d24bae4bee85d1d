"""The import-linter layers (pyproject.toml) cover every module of the template.

``lint-imports`` (in ``make lint``) checks that imports point down the layers; a module left out
of every layer would escape that check, so this test fails when one is added without a place.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
MACHINERY = ("keel", "graph", "agents", "retrieval", "tools", "observability")


def _layered() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [m.strip() for layer in layers for m in layer.replace(":", "|").split("|")]


def _modules() -> set[str]:
    found: set[str] = set()
    for package in MACHINERY:
        for info in pkgutil.iter_modules([str(ROOT / package)]):
            assert not info.ispkg, f"{package}.{info.name}: add its modules to the layers"
            found.add(f"{package}.{info.name}")
    return found


def test_every_module_of_the_template_is_in_exactly_one_layer() -> None:
    layered = _layered()
    assert len(layered) == len(set(layered)), "a module is in two layers"
    assert set(layered) == _modules()


def test_package_inits_import_only_their_own_package() -> None:
    """A package ``__init__`` sits outside the layers; it must not reach across them (the old
    ``graph/__init__`` re-exported the builder, which every ``import graph.state`` then ran)."""
    graph = grimp.build_graph(*MACHINERY)
    for package in MACHINERY:
        imported = graph.find_modules_directly_imported_by(package)
        assert {m for m in imported if m.split(".")[0] != package} == set(), package


SERVED = ("keel.serve", "keel.servers", "graph.studio", "graph.serve_app", "graph.serve_auth")
"""What ``make serve`` runs (``python -m keel.serve``) and what Aegra's processes load."""


def _evals_loaded_by(*modules: str) -> list[str]:
    """The ``evals`` modules a fresh interpreter holds after importing ``modules`` (imports made
    at run time included, which ``lint-imports`` cannot see)."""
    code = (
        f"import sys, json, {', '.join(modules)}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'evals')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_serving_imports_nothing_from_the_evals() -> None:
    """Serving is product code: a deployment never loads the benchmark package (the static
    contract is in pyproject's [tool.importlinter]; this checks the running interpreter)."""
    assert _evals_loaded_by(*SERVED) == []


def test_the_scale_demo_loads_only_its_own_driver_from_the_evals() -> None:
    assert _evals_loaded_by("evals.scale_demo") == ["evals", "evals.scale_demo"]
