"""etcd's remediation catalogue.

- ``restart_member`` (high risk): stop a member (SIGTERM, then SIGKILL) and start it again
  on its data; it rejoins as a follower.
- ``transfer_leadership`` (medium risk): the leader hands leadership to another member
  (``POST /v3/maintenance/transfer-leadership``, which only the leader accepts: a follower
  answers ``etcdserver: not leader``), a brief election without a timeout. Idempotent (a
  member that already leads is left as it is), so the runner may retry it.

``restart_member`` is not idempotent: after a failure that may have stopped the member,
the runner does not retry it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence

import httpx

from pytest_operator import Action, ActionError, FaultKind, Param, Risk

TIMEOUT = httpx.Timeout(2.0)
Args = Mapping[str, int | float | str]


class MaintenanceApi:
    """Calls the members' maintenance endpoints at their own client addresses."""

    def __init__(self, members: Mapping[str, str]) -> None:
        self.members = dict(members)
        self._http = httpx.AsyncClient(timeout=TIMEOUT)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, name: str, path: str, body: object) -> dict[str, object]:
        """POST ``body`` to one member; an error reply or no answer is an ActionError."""
        try:
            r = await self._http.post(f"{self.members[name]}{path}", content=json.dumps(body))
        except httpx.HTTPError as exc:
            raise ActionError(f"{name} {path}: {type(exc).__name__}: {exc}") from exc
        try:
            reply = r.json()
        except ValueError:
            reply = None
        if r.status_code != 200 or not isinstance(reply, dict) or "error" in reply:
            raise ActionError(f"{name} {path}: HTTP {r.status_code}: {r.text[:200]}")
        return reply

    async def member_ids(self) -> tuple[dict[str, int], str]:
        """Every member's ID by name, and the name of the leader, as the first member that
        answers sees them."""
        errors = []
        for name in self.members:
            try:
                status = await self.call(name, "/v3/maintenance/status", {})
                listing = await self.call(name, "/v3/cluster/member/list", {})
            except ActionError as exc:
                errors.append(str(exc))
                continue
            ids = {}
            listed = listing.get("members")
            for m in listed if isinstance(listed, list) else ():
                if isinstance(m, dict) and m.get("name") in self.members:
                    ids[str(m["name"])] = int(m["ID"])
            by_id = {v: k for k, v in ids.items()}
            leader = by_id.get(int(str(status.get("leader", 0))))
            if leader is None:
                errors.append(f"{name} sees no leader")
                continue
            return ids, leader
        raise ActionError(f"no member named a leader ({'; '.join(errors)})")

    async def transfer_leadership(self, target: str) -> str:
        ids, leader = await self.member_ids()
        if leader == target:
            return f"{target} already leads"
        await self.call(
            leader, "/v3/maintenance/transfer-leadership", {"targetID": str(ids[target])}
        )
        return f"leadership moved from {leader} to {target}"


def catalogue(api: MaintenanceApi, restart: Callable[[str], Awaitable[None]]) -> Sequence[Action]:
    members = tuple(api.members)

    async def restart_member(args: Args) -> str:
        await restart(str(args["member"]))
        return f"{args['member']} restarted"

    async def transfer_leadership(args: Args) -> str:
        return await api.transfer_leadership(str(args["member"]))

    return (
        Action(
            "restart_member",
            "restart one etcd member on its data (it rejoins as a follower)",
            Risk.HIGH,
            (Param("member", str, "the member to restart", choices=members),),
            restart_member,
            remedies=frozenset({FaultKind.CRASH, FaultKind.PAUSE}),
            target="member",
            timeout=30.0,  # stop (3 s grace), start, and the member's health check
        ),
        Action(
            "transfer_leadership",
            "make another member the leader (the current leader hands over)",
            Risk.MEDIUM,
            (Param("member", str, "the member to lead", choices=members),),
            transfer_leadership,
            target="member",
            idempotent=True,  # a member that already leads is left as it is
            timeout=10.0,
        ),
    )
