"""Reviewed YAML files (the permission manifest, eval scenarios): errors that name the line.

``yaml.safe_load`` keeps the last of two equal keys, so a second ``validator:`` block in a
manifest would quietly replace the first; ``load_reviewed`` refuses any duplicate key instead.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError


class DuplicateKey(ConstructorError):
    """A mapping names the same key twice; ``problem_mark`` is where the second one is."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming a key twice, at any depth.

    Keys are compared as loaded (``1`` and ``"1"`` differ, ``yes`` and ``true`` do not). Keys
    brought in by a merge (``<<: *base``) may be overridden: that is what a merge is for.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, Hashable):
                continue  # the base class refuses an unhashable key with its own message
            try:
                seen = first_line.get(key)
            except TypeError:  # hashable by type, not by value (a tuple holding a list)
                continue
            if seen is not None:
                raise DuplicateKey(
                    None, None, f"found duplicate key {key!r} (first at line {seen})",
                    key_node.start_mark,
                )  # fmt: skip
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_reviewed(text: str) -> tuple[yaml.Node | None, Any]:
    """The YAML tree (for ``line_of``) and the data of one document, refusing duplicate keys.

    Raises:
        yaml.YAMLError: the text is not YAML, or a mapping names a key twice (``DuplicateKey``).

    Example:
        >>> load_reviewed("a: 1\\nb: 2\\n")[1]
        {'a': 1, 'b': 2}
        >>> try:
        ...     load_reviewed("a: 1\\na: 2\\n")
        ... except DuplicateKey as err:
        ...     print(problem_of(err))
        (2, "found duplicate key 'a' (first at line 1)")
    """
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def problem_of(err: yaml.YAMLError) -> tuple[int | None, str]:
    """The 1-based line a YAML error points at (None when it names none), and what it says.

    Example:
        >>> try:
        ...     load_reviewed("a: [")
        ... except yaml.YAMLError as err:
        ...     print(problem_of(err))
        (1, "while parsing a flow node: expected the node content, but found '<stream end>'")
    """
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    said = ": ".join(p for p in parts if p) or str(err).splitlines()[0]
    return (mark.line + 1 if mark is not None else None), said


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
