"""The etcd subject: a real Raft cluster (Debian's etcd-server 3.4), 3 or 5 members.

Registered in the ``pytest_operator.subjects`` entry-point group as ``etcd``. The
adapter (and its HTTP client) loads on first use of ``subject``. What etcd does under
each fault, as measured here, is written down in :mod:`subjects.etcd.cluster`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from subjects.etcd.adapter import EtcdSubject

__all__ = ["subject"]


def __getattr__(name: str) -> EtcdSubject:
    if name == "subject":
        from subjects.etcd.adapter import EtcdSubject

        value = EtcdSubject()
        globals()["subject"] = value  # built once; later lookups find it directly
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
