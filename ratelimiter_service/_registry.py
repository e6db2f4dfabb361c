"""The node registry in Redis: each node's entry and its last heartbeat (Redis clock)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from ._scripts import Keys


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """What a node writes about itself on every heartbeat."""

    id: str
    address: str
    started_at: float
    pid: int
    policy: str
    clock: str
    heartbeat_ms: int
    mode: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "address": self.address,
                "started_at": self.started_at,
                "pid": self.pid,
                "policy": self.policy,
                "clock": self.clock,
                "heartbeat_ms": self.heartbeat_ms,
                "mode": self.mode,
            }
        )


@dataclass(frozen=True, slots=True)
class NodeView:
    entry: NodeEntry
    last_seen_ms: int
    age_ms: int
    up: bool

    def to_json(self) -> dict[str, object]:
        e = self.entry
        return {
            "id": e.id,
            "address": e.address,
            "state": "Up" if self.up else "Down",
            "mode": e.mode,
            "started_at": e.started_at,
            "last_seen_ms": self.last_seen_ms,
            "age_ms": self.age_ms,
            "policy": e.policy,
            "clock": e.clock,
            "heartbeat_ms": e.heartbeat_ms,
            "pid": e.pid,
        }


def down_after_ms(heartbeat_ms: int) -> int:
    """A node whose last heartbeat is older than this is Down."""
    return 3 * heartbeat_ms + 250


def _parse_entry(raw: bytes) -> NodeEntry | None:
    try:
        data = json.loads(raw)
        return NodeEntry(
            id=str(data["id"]),
            address=str(data["address"]),
            started_at=float(data["started_at"]),
            pid=int(data["pid"]),
            policy=str(data["policy"]),
            clock=str(data["clock"]),
            heartbeat_ms=int(data["heartbeat_ms"]),
            mode=str(data["mode"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


async def list_nodes(client: aioredis.Redis, keys: Keys) -> list[NodeView]:
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.nodes)
    pipe.hgetall(keys.nodes_seen)
    pipe.time()
    entries, seen, (seconds, micros) = await pipe.execute()
    now_ms = seconds * 1000 + micros // 1000
    views = []
    for raw in entries.values():
        entry = _parse_entry(raw)
        if entry is None:
            continue
        last = int(seen.get(entry.id.encode(), 0))
        age = max(now_ms - last, 0)
        views.append(NodeView(entry, last, age, age <= down_after_ms(entry.heartbeat_ms)))
    return sorted(views, key=lambda view: view.entry.id)
