"""The package's public names all resolve, and importing the plugin stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest_operator


def test_every_exported_name_resolves() -> None:
    assert sorted(pytest_operator.__all__) == sorted(pytest_operator._EXPORTS)
    for name in pytest_operator.__all__:
        assert getattr(pytest_operator, name) is not None


def test_importing_the_plugin_does_not_load_heavy_modules() -> None:
    code = (
        "import sys, pytest_operator.plugin\n"
        "heavy = ('httpx', 'redis', 'anthropic', 'matplotlib', 'fastapi')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
