"""Subjects come from the ``pytest_operator.subjects`` entry-point group.

``pip install`` of a package that declares an entry point in that group is all it
takes to add a subject; the entry point names an object satisfying ``Subject``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_operator._subject import Subject

GROUP = "pytest_operator.subjects"


def installed() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load(name: str) -> Subject:
    """The installed subject called ``name``; a UsageError naming the installed ones if none."""
    eps = installed()
    ep = eps.get(name)
    if ep is None:
        valid = ", ".join(sorted(eps)) or "none"
        raise pytest.UsageError(f"--subject={name}: no such subject; installed subjects: {valid}")
    try:
        subject = ep.load()
    except Exception as exc:
        raise pytest.UsageError(
            f"--subject={name}: loading entry point {ep.value!r} failed: {exc}"
        ) from exc
    if getattr(subject, "name", None) != name:
        raise pytest.UsageError(
            f"--subject={name}: entry point {ep.value!r} is not a subject"
            f" (it should name an object whose .name is {name!r})"
        )
    return subject  # type: ignore[no-any-return]  # entry points are untyped
