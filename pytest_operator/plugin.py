"""The pytest plugin: options, markers and fixtures (registered through pytest11)."""

from __future__ import annotations
