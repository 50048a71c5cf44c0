"""Reading a spec's YAML within bounds: PyYAML's safe loader, limited.

A spec comes from users and files of unknown origin: nesting depth, the number of values
after alias expansion (a 'billion laughs' is refused, not expanded), recursive aliases and
duplicate keys are refused while the document is composed, each with its position; a
scalar that is not what its tag says (``!!int abc``) is a LoadError, not a Python error.
"""

from __future__ import annotations

from typing import Any, Protocol

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.nodes import Node as YamlNode
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser as _Events  # libyaml: scans and parses in C
except ImportError:  # PyYAML built without libyaml: the same events, parsed in Python
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Events(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


MAX_DEPTH = 32  # YAML nesting levels; a spec needs 6
# YAML values, aliases counted each time used: 1000 nodes with a dozen labels each need 40k.
MAX_VALUES = 50_000
_MAX_QUOTE = 60


def _quote(value: object) -> str:
    text = repr(str(value)[:_MAX_QUOTE])  # slice first: a scalar may be a megabyte
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 3] + "..."


class LoadError(yaml.YAMLError):
    """A YAML document that parses but that a spec may not be (too deep, too big, ...)."""


class _Mark(Protocol):  # yaml.error.Mark, or libyaml's
    line: int
    column: int


def at(mark: _Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown position"


class _SpecLoader(Composer, _Events, SafeConstructor, Resolver):
    """PyYAML's safe loader, bounded: nesting depth, values after alias expansion (a
    'billion laughs' is refused, not expanded), no recursive aliases, no duplicate keys,
    and tagged scalars that are not what their tag says reported with their position."""

    def __init__(self, text: str) -> None:
        _Events.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._values = 0
        # Each composed node's (values, height), aliases expanded: an alias costs what
        # its target would, so sharing cannot hide size or depth.
        self._extent: dict[YamlNode, tuple[int, int]] = {}

    def compose_node(self, parent: YamlNode | None, index: Any) -> YamlNode | None:
        event = self.peek_event()
        mark = event.start_mark if event else None
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML reports the undefined alias
                if target not in self._extent:
                    raise LoadError(
                        f"alias *{event.anchor} at {at(mark)} is inside the node it refers "
                        "to; a spec cannot be recursive"
                    )
                self._spend(*self._extent[target], mark)
            return super().compose_node(parent, index)
        self._spend(1, 1, mark)
        before = self._values
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            height = max((self._extent[c][1] for c in _children(node)), default=0)
            self._extent[node] = (self._values - before + 1, height + 1)
        return node

    def _spend(self, values: int, height: int, mark: _Mark | None) -> None:
        if self._depth + height > MAX_DEPTH:
            raise _too_deep(mark)
        self._values += values
        if self._values > MAX_VALUES:
            raise LoadError(
                f"the spec holds more than {MAX_VALUES} values (at {at(mark)}; aliases "
                f"count each time they are used); a spec of 1000 nodes needs far fewer"
            )

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], _Mark] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # complex keys are refused by the schema; merges may override
            seen = first.setdefault((key.tag, key.value), key.start_mark)
            if seen is not key.start_mark:
                raise LoadError(
                    f"duplicate key {_quote(key.value)} at line {key.start_mark.line + 1} "
                    f"(first at line {seen.line + 1}); a YAML mapping may hold each key "
                    "once: keep one"
                )
        return node

    def construct_object(self, node: YamlNode, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # PyYAML's constructors raise plain Python errors for a scalar that is not
            # what its tag says (!!int abc, !!bool maybe, an int of 5000 digits).
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise LoadError(
                f"the value at {at(node.start_mark)} ({_quote(node.value)}) cannot be read as {tag}"
            ) from exc


def _children(node: YamlNode) -> list[YamlNode]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _too_deep(mark: _Mark | None) -> LoadError:
    return LoadError(
        f"YAML nested more than {MAX_DEPTH} levels deep at {at(mark)}; a cluster spec needs 6"
    )


def read_yaml(text: str) -> Any:
    """The document in ``text``; LoadError or another yaml.YAMLError when refused."""
    loader = _SpecLoader(text)  # the pure-Python reader already checks characters here
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        # libyaml >= 0.2.5 has a nesting limit of its own, which its scanner can meet
        # before the composer counts levels (it scans a run of '[' ahead): same refusal.
        if "maximum nesting depth" in str(exc.problem):
            raise _too_deep(exc.problem_mark) from exc
        raise
    finally:
        loader.dispose()
