"""Running pytest as a person does: under a real pseudo-terminal, or with its output
piped (as CI does), on scenario files written for the test."""

from __future__ import annotations

import pytest

from tests.pytester_runs import INI


@pytest.fixture(autouse=True)
def _base_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
