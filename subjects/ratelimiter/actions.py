"""The rate limiter's remediation catalogue, over its management API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import httpx

from pytest_operator._actions import Action, ActionError, Args, Param, Risk
from pytest_operator._causes import FaultKind

ALGORITHMS = ("sliding_log", "sliding_window", "fixed_window", "gcra")
TIMEOUT = httpx.Timeout(2.0)


class ManagementApi:
    """Calls a node's management endpoints, trying the next node when one fails."""

    async def each(self, method: str, path: str) -> list[httpx.Response]:
        """The same read on every node that answers (a down node is skipped)."""
        out = []
        for base in self.nodes.values():
            try:
                out.append(await self._http.request(method, f"{base}{path}"))
            except httpx.HTTPError:
                continue
        return out

    def __init__(self, nodes: dict[str, str], token: str | None = None) -> None:
        self.nodes = nodes
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(timeout=TIMEOUT, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, json: object | None = None, *, allow: tuple[int, ...] = ()
    ) -> httpx.Response:
        errors = []
        for name, base in self.nodes.items():
            try:
                r = await self._http.request(method, f"{base}{path}", json=json)
            except httpx.HTTPError as exc:
                errors.append(f"{name}: {type(exc).__name__}")
                continue
            if r.status_code >= 500:
                errors.append(f"{name}: HTTP {r.status_code}")
                continue
            if r.status_code >= 400 and r.status_code not in allow:
                raise ActionError(f"{method} {path}: HTTP {r.status_code}: {r.text[:200]}")
            return r
        raise ActionError(f"{method} {path}: no node answered ({'; '.join(errors)})")


def catalogue(api: ManagementApi, restart: Callable[[str], Awaitable[None]]) -> Sequence[Action]:
    nodes = tuple(api.nodes)

    async def reset_counter(args: Args) -> str:
        await api.request("POST", f"/api/counters/{args['key']}/reset")
        return f"counter {args['key']!r} reset"

    async def update_limit(args: Args) -> str:
        body = {"limit": args["limit"], "window_ms": args["window_ms"]}
        if "algorithm" in args:
            body["algorithm"] = args["algorithm"]
        await api.request("PUT", f"/api/limits/{args['key']}", json=body)
        return f"limit of {args['key']!r} set to {args['limit']} per {args['window_ms']} ms"

    async def restart_node(args: Args) -> str:
        await restart(str(args["node"]))
        return f"{args['node']} restarted"

    key = Param("key", str, "the rate-limited key")
    return (
        Action(
            "reset_counter", "forget a key's admitted requests", Risk.LOW, (key,), reset_counter
        ),
        Action(
            "update_limit",
            "change a key's limit, window or algorithm on every node",
            Risk.MEDIUM,
            (
                key,
                Param("limit", int, "requests per window", minimum=1, maximum=10**9),
                Param("window_ms", int, "window length", minimum=1, maximum=86_400_000),
                Param("algorithm", str, "algorithm", required=False, choices=ALGORITHMS),
            ),
            update_limit,
            remedies=frozenset({FaultKind.MISCONFIGURATION}),
        ),
        Action(
            "restart_node",
            "restart one rate limiter node",
            Risk.HIGH,
            (Param("node", str, "the node to restart", choices=nodes),),
            restart_node,
            remedies=frozenset({FaultKind.CRASH, FaultKind.PAUSE}),
            target="node",
        ),
    )
