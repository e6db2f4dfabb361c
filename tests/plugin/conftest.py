from __future__ import annotations

import pytest

BASE_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture(autouse=True)
def _base_ini(pytester: pytest.Pytester) -> None:
    """Inner runs get the asyncio setting too, so its deprecation warning stays quiet."""
    pytester.makeini(BASE_INI)
