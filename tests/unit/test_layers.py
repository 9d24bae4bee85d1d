"""The import-linter layers (pyproject.toml) cover every module of the template.

``lint-imports`` (in ``make lint``) checks that imports point down the layers; a module left out
of every layer would escape that check, so this test fails when one is added without a place.
"""

from __future__ import annotations

import pkgutil
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
