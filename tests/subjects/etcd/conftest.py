"""Shared by the etcd subject's tests: one real 3-member cluster per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from pytest_operator._cluster import EmbeddedCluster
from subjects.etcd import subject

MEMBERS = ("etcd-1", "etcd-2", "etcd-3")
WAIT = 30.0  # a loaded 2-core machine: generous bounds on every wait


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    config = subject.configure(3, {})
    async with EmbeddedCluster(subject.embedded_spec(config)) as running:
        yield running
