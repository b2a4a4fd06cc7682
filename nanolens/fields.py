"""Reading the JSON files nanolens writes with every field's type checked.

A file nanolens reads may have been edited, truncated or written by something else. Trusting
its fields turns a wrong type into an `AttributeError` deep inside, or a value that is quietly
wrong; checking them turns it into one line that names the file, the field, what was expected
and what was found: `runs/x/best/config.json: n_layer: expected an integer, got 'x'`.

    data = read_json(path)                          # a JSON object, or FileFormatError
    hooks = field(data, "hooks", LIST_OF_STR, path)
    label = field(data, "label", optional(STR), path, default=None)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FileFormatError(ValueError):
    """A file holds something other than nanolens wrote there: `file: field: expected T, got V`."""


@dataclass(frozen=True)
class Kind:
    """What a field must hold: a name for messages and a check."""

    name: str
    check: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


INT = Kind("an integer", _is_int)
NUMBER = Kind("a number", _is_number)
STR = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
OBJECT = Kind("an object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))
LIST_OF_STR = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
NUMBERS_BY_NAME = Kind("an object of numbers", lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()))


def optional(kind: Kind) -> Kind:
    return one_of(kind, Kind("null", lambda v: v is None))


def one_of(*kinds: Kind) -> Kind:
    """Any of `kinds`, named as a list: "true, false or null"."""
    names = [part for k in kinds for part in k.name.split(" or ")]
    name = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return Kind(name, lambda v: any(k.check(v) for k in kinds))


_MISSING = object()


def shown(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def field(data: Mapping[str, Any], name: str, kind: Kind, where: str | Path, default: Any = _MISSING) -> Any:
    """`data[name]`, checked to be `kind`; a missing field is `default` (or an error without one)."""
    if name not in data:
        if default is _MISSING:
            raise FileFormatError(f"{where}: {name}: missing (expected {kind.name})")
        return default
    value = data[name]
    if not kind.check(value):
        raise FileFormatError(f"{where}: {name}: expected {kind.name}, got {shown(value)}")
    return value


def as_object(data: Any, where: str | Path) -> dict[str, Any]:
    """`data` if it is a JSON object (a dict), else an error naming what it is."""
    if not isinstance(data, dict):
        raise FileFormatError(f"{where}: expected a JSON object, got {type(data).__name__} {shown(data, 40)}")
    return data


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a UTF-8 file, or a FileFormatError that names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {err.start}); the file is damaged or not a JSON file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    return as_object(data, path)
