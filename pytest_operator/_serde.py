"""JSON for the evidence an engine sees (a :class:`Case`) and for diagnoses.

Used to attach timelines to reports, to keep real cases as test data, and to key
recorded engine responses. Round-trips exactly: ``case_from_json(case_to_json(c)) == c``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, TypeVar

from pytest_operator._diagnosis import Case, Diagnosis

T = TypeVar("T")

OMIT_DEFAULT = "serde_omit_default"
"""Field metadata key: a field added to a shape after cases were recorded is left out of
the JSON while it holds its default, so a case recorded before it was added writes back
exactly as it was read (a missing field reads back as its default). Shapes mark such a
field with ``field(default=None, metadata={OMIT_DEFAULT: True})`` (``_signals`` cannot
import this module, so it spells the key out)."""


def to_data(value: object) -> Any:
    """Dataclasses, enums and tuples as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_data(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get(OMIT_DEFAULT) and getattr(value, f.name) == f.default)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_data(v) for v in value]
    return value


def _build(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return _build(args[0], data)
    if origin is tuple:
        items = typing.get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_build(items[0], d) for d in data)
        return tuple(_build(a, d) for a, d in zip(items, data, strict=True))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(tp)
                     if f.name in data})  # fmt: skip
    if tp is float and isinstance(data, int):
        return float(data)
    return data


def from_data(cls: type[T], data: Any) -> T:
    value = _build(cls, data)
    assert isinstance(value, cls)
    return value


def case_to_json(case: Case) -> str:
    return json.dumps(to_data(case), sort_keys=True)


def case_from_json(text: str) -> Case:
    return from_data(Case, json.loads(text))


def diagnosis_to_json(diagnosis: Diagnosis) -> str:
    return json.dumps(to_data(diagnosis), sort_keys=True, indent=2)
