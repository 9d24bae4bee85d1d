"""Reviewed YAML files (the permission manifest, eval scenarios): errors that name the line."""

from __future__ import annotations

from typing import Any

import yaml


def line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest node of ``loc`` that exists in the YAML tree.

    Example:
        >>> line_of(yaml.compose("a:\\n  b: 1\\n  c: 2\\n"), ("a", "c"))
        3
    """
    node = root
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if k.value == str(part)), None)
            if found is None:
                break
            key = next(k for k, _ in node.value if k.value == str(part))
            node, line = found, key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
