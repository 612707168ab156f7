"""Strict YAML for configuration and policy files: YAML 1.2 core types only, with positions.

Refused, each with ``source:line:col``: duplicate keys, anchors/aliases/merge keys, explicit tags,
non-string keys, and plain scalars that YAML 1.1 would silently turn into something else
(``yes``/``no``/``on``/``off``/``y``/``n``, ``010``, ``1:20``). Size and depth are bounded.
Validation helpers turn a located tree into typed values or raise :class:`PolicyError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from attestation.errors import PolicyError

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_YAML11_BOOL = re.compile(r"^(?:y|n|yes|no|on|off)$", re.IGNORECASE)
_YAML11_NUMBER = re.compile(r"^[-+]?(?:0[0-9_]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+"
                            r"|[0-9]+(?::[0-5]?[0-9])+(?:\.[0-9]*)?|[0-9][0-9_]*_[0-9_]*)$")
T = TypeVar("T")


@dataclass(frozen=True)
class Node:
    """A value with its position; ``text`` is the scalar as written (None for maps and lists)."""

    value: Any
    line: int
    col: int
    text: str | None = None
    source: str = ""
    key_marks: tuple[tuple[str, int, int], ...] = ()  # a mapping's keys: (name, line, col)

    def error(self, message: str) -> PolicyError:
        """A PolicyError pointing at this node."""
        return PolicyError(f"{self.source}:{self.line}:{self.col}: {message}")


def _fail(source: str, mark: Any, message: str) -> PolicyError:
    return PolicyError(f"{source}:{mark.line + 1}:{mark.column + 1}: {message}")


def _scalar(node: yaml.ScalarNode, source: str) -> Node:
    text = node.value
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if node.style is not None:  # quoted or block scalar: always a string
        return Node(text, line, col, text, source)
    if _YAML11_BOOL.match(text):
        raise _fail(source, node.start_mark, f"{text!r} is ambiguous (YAML 1.1 reads it as a "
                    "boolean): write true/false, or quote it for a string")
    if _YAML11_NUMBER.match(text):
        raise _fail(source, node.start_mark, f"{text!r} is ambiguous (YAML 1.1 reads it as an "
                    "octal/hex/binary/sexagesimal number): quote it or write a plain decimal")
    value: Any = text
    if _NULL.match(text):
        value = None
    elif text in _BOOL:
        value = _BOOL[text]
    elif _INT.match(text):
        value = int(text)
    elif _FLOAT.match(text):
        value = float(text)
    return Node(value, line, col, text, source)


def _convert(node: yaml.Node, source: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise _fail(source, node.start_mark, f"nesting deeper than {MAX_DEPTH}")
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node, source)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(n, source, depth + 1) for n in node.value], line, col, None, source)
    assert isinstance(node, yaml.MappingNode)
    out: dict[str, Node] = {}
    marks: list[tuple[str, int, int]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            raise _fail(source, key.start_mark, "keys must be plain strings (no merge keys)")
        name = key.value
        if name in out:
            raise _fail(source, key.start_mark, f"duplicate key {name!r} (first at line "
                        f"{out[name].line})")
        out[name] = _convert(value, source, depth + 1)
        marks.append((name, key.start_mark.line + 1, key.start_mark.column + 1))
    return Node(out, line, col, None, source, tuple(marks))


def load_strict(text: str, source: str) -> Node:
    """Parse one YAML document into a located tree; an empty document is an empty map."""
    if len(text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES:
        raise PolicyError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _fail(source, event.start_mark, "anchors and aliases are not allowed")
            tag = getattr(event, "tag", None)
            if tag is not None and isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
                raise _fail(source, event.start_mark, f"explicit tag {tag!r} is not allowed")
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise PolicyError(f"{source}:{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    if len(documents) > 1:
        raise PolicyError(f"{source}: exactly one YAML document expected")
    if not documents or documents[0] is None:
        return Node({}, 1, 1, None, source)
    root = _convert(documents[0], source, 0)
    if not isinstance(root.value, dict):
        raise root.error("the document must be a mapping")
    return root


# --- validation helpers ----------------------------------------------------------------------

def mapping(node: Node, allowed: set[str], what: str) -> dict[str, Node]:
    """``node`` as a map whose keys are all in ``allowed``."""
    if not isinstance(node.value, dict):
        raise node.error(f"{what} must be a mapping")
    for key, line, col in node.key_marks:
        if key not in allowed:
            raise PolicyError(f"{node.source}:{line}:{col}: unknown key {key!r} in {what} "
                              f"(expected one of {', '.join(sorted(allowed))})")
    value: dict[str, Node] = node.value
    return value


def boolean(node: Node, what: str) -> bool:
    """A true/false value."""
    if not isinstance(node.value, bool):
        raise node.error(f"{what} must be true or false")
    return node.value


def integer(node: Node, what: str, low: int, high: int) -> int:
    """An integer within [low, high]."""
    if isinstance(node.value, bool) or not isinstance(node.value, int):
        raise node.error(f"{what} must be an integer")
    if not low <= node.value <= high:
        raise node.error(f"{what} must be between {low} and {high}, got {node.value}")
    return node.value


def number(node: Node, what: str, low: float, high: float) -> float:
    """An integer or float within [low, high]."""
    if isinstance(node.value, bool) or not isinstance(node.value, int | float):
        raise node.error(f"{what} must be a number")
    if not low <= node.value <= high:
        raise node.error(f"{what} must be between {low} and {high}, got {node.value}")
    return float(node.value)


def string(node: Node, what: str) -> str:
    """A string (a quoted scalar, or a plain one that is not null/bool/number)."""
    if not isinstance(node.value, str):
        raise node.error(f"{what} must be a string (quote it)")
    return node.value


def hex_bytes(node: Node, what: str, size: int) -> bytes:
    """Exactly ``size`` bytes written as hex (plain digits are read as written, not as numbers)."""
    text = node.text if node.text is not None else ""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise node.error(f"{what} must be hex") from None
    if len(value) != size:
        raise node.error(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(value)}")
    return value


def sequence(node: Node, what: str, item: Callable[[Node], T], max_items: int = 1024) -> list[T]:
    """A list whose items each pass ``item``."""
    if not isinstance(node.value, list):
        raise node.error(f"{what} must be a list")
    if len(node.value) > max_items:
        raise node.error(f"{what} holds more than {max_items} items")
    return [item(child) for child in node.value]
