"""The protocol's JSON Schema (``protocol.schema.json``) and a small validator for it.

The schema documents every message of docs/plugins/PROTOCOL.md in a form other languages'
tools can read; the checker validates what a plugin sends against it. The validator is
standard library only (the SDK must stay dependency-free) and implements exactly the subset
of JSON Schema the file uses:

    type (a name or a list), required, properties, additionalProperties (bool or schema),
    items, enum, pattern (``re.search``), minLength, maxLength, minimum, maximum,
    and local ``$ref`` ("#/$defs/name").

Anything else in a schema (``description``, ``$schema``, ``title``...) is ignored, so a
keyword outside the subset fails open; ``tests/sdk/test_schema.py`` checks that the shipped
file uses no other validation keyword.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["KEYWORDS", "SchemaError", "errors", "load", "validate"]

# The validation keywords this module implements (the rest of a schema is annotation).
KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "$ref",
    }
)

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaError(ValueError):
    """A value does not match its schema; ``problems`` lists each mismatch with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@cache
def load() -> dict[str, Any]:
    """The shipped protocol schema (read once, from the package, so it works in a zipapp)."""
    text = resources.files(__package__).joinpath("protocol.schema.json").read_text("utf-8")
    return json.loads(text)


def errors(
    value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``"$.a.b: what is wrong"`` strings."""
    root = schema if root is None else root
    ref = schema.get("$ref")
    if ref is not None:
        return errors(value, _resolve(root, ref), root, path)
    want = schema.get("type")
    if want is not None:
        names = [want] if isinstance(want, str) else list(want)
        if not any(_TYPES[n](value) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {_show(value)}"]
    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(json.dumps(c) for c in schema["enum"])
        out.append(f"{path}: must be one of {choices}, got {_show(value)}")
    if isinstance(value, str):
        out += _string(value, schema, path)
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} is greater than the maximum {schema['maximum']}")
    if isinstance(value, dict):
        out += _object(value, schema, root, path)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += errors(item, schema["items"], root, f"{path}[{i}]")
    return out


def validate(value: Any, name: str) -> None:
    """Raise ``SchemaError`` unless ``value`` matches ``$defs[name]`` of the protocol schema."""
    root = load()
    problems = errors(value, root["$defs"][name], root)
    if problems:
        raise SchemaError(problems)


def _string(value: str, schema: dict[str, Any], path: str) -> list[str]:
    out = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        out.append(f"{path}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(f"{path}: longer than {schema['maxLength']} characters ({len(value)})")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{path}: {_show(value)} does not match {schema['pattern']}")
    return out


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict, path: str) -> list[str]:
    out = [f"{path}: missing {k!r}" for k in schema.get("required", ()) if k not in value]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}"
        if key in props:
            out += errors(item, props[key], root, where)
        elif extra is False:
            out.append(f"{where}: unknown key")
        elif isinstance(extra, dict):
            out += errors(item, extra, root, where)
    return out


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
