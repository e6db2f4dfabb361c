"""The rate limiter's remediation catalogue, over its management API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from pytest_operator._actions import Action, ActionError, Args, Param, Risk
from pytest_operator._causes import FaultKind

ALGORITHMS = ("sliding_log", "sliding_window", "fixed_window", "gcra")
TIMEOUT = httpx.Timeout(2.0)


@dataclass(frozen=True, slots=True)
class Declared:
    """The limit the subject declares for every key (its options: limit, window_ms,
    algorithm), which each node starts with as its default."""

    limit: int
    window_ms: int
    algorithm: str

    def body(self) -> dict[str, object]:
        return {"limit": self.limit, "window_ms": self.window_ms, "algorithm": self.algorithm}


class ManagementApi:
    """Calls a node's management endpoints, trying the next node when one fails."""

    async def each(self, method: str, path: str) -> list[httpx.Response]:
        """The same read on every node that answers (a down node is skipped)."""
        return [r for _, r in await self.by_node(method, path)]

    async def by_node(self, method: str, path: str) -> list[tuple[str, httpx.Response]]:
        """The same read on every node that answers, with the node's name."""
        out = []
        for name, base in self.nodes.items():
            try:
                out.append((name, await self._http.request(method, f"{base}{path}")))
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


async def configured_limits(api: ManagementApi) -> dict[str, dict[str, object]]:
    """Every key with a limit configured on some node (not the default), as the nodes that
    answer report it: key -> {limit, window_ms, algorithm}."""
    out: dict[str, dict[str, object]] = {}
    for r in await api.each("GET", "/api/counters"):
        if r.status_code != 200:
            continue
        for c in r.json().get("counters", []):
            if c.get("configured"):
                spec = {k: c[k] for k in ("limit", "window_ms", "algorithm")}
                out.setdefault(str(c["key"]), spec)
    return out


def catalogue(
    api: ManagementApi,
    restart: Callable[[str], Awaitable[None]],
    declared: Declared | None = None,
) -> Sequence[Action]:
    """The actions; ``restore_limits`` only when the subject declared its limit."""
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

    async def restore_limits(args: Args) -> str:
        assert declared is not None
        want = declared.body()
        changed = sorted(k for k, spec in (await configured_limits(api)).items() if spec != want)
        for key in changed:
            await api.request("PUT", f"/api/limits/{quote(key, safe='')}", json=want)
        what = ", ".join(repr(k) for k in changed) or "no key (all as declared)"
        return (
            f"declared limit ({declared.limit} per {declared.window_ms} ms by"
            f" {declared.algorithm}) applied again to {what}"
        )

    key = Param("key", str, "the rate-limited key")
    restore = (
        Action(
            "restore_limits",
            "apply the declared limit again to every key configured otherwise, on every node",
            Risk.MEDIUM,
            (),
            restore_limits,
            remedies=frozenset({FaultKind.MISCONFIGURATION}),
            timeout=10.0,
            idempotent=True,  # a PUT of the declared limit: the same again changes nothing
        ),
    )
    return (
        Action(
            "reset_counter",
            "forget a key's admitted requests",
            Risk.LOW,
            (key,),
            reset_counter,
            timeout=5.0,
            idempotent=True,  # forgetting twice is forgetting once
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
            timeout=5.0,
            idempotent=True,  # a PUT: the same limit set twice is set once
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
        *(restore if declared is not None else ()),
    )
