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
MACHINERY = ("keel", "graph", "agents", "retrieval", "tools", "observability", "stores")


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


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles among ``graph``'s modules: its strongly connected components of more
    than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append(
                        (other, iter(sorted(graph.find_modules_directly_imported_by(other))))
                    )
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_no_import_cycle_runs_through_the_template_its_evals_or_its_domains() -> None:
    """Every import counts, those inside functions too: a cycle across packages (the CLI that
    loaded the evals that called the CLI) is found here, where the layers and the acyclic
    contract of pyproject.toml look inside one package at a time."""
    graph = grimp.build_graph(*MACHINERY, "evals", "domains")
    assert _cycles(graph) == []


def test_a_cycle_is_found() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in (("a.cli", "b.verbs"), ("b.verbs", "b.worker"),
                               ("b.worker", "a.cli"), ("b.worker", "a.settings")):  # fmt: skip
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == [["a.cli", "b.verbs", "b.worker"]]
