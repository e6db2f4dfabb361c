"""A small async client for Toxiproxy's HTTP API.

One client per server (its base URL is an instance attribute, not a global); a timeout on
every call; updates with PATCH; server-side ``/populate`` and ``/reset``; and every non-2xx
answer raised as :class:`ToxiproxyError` carrying the server's own message and status.

Toxiproxy's API, for reference: ``GET /version``; ``GET|POST /proxies``; ``POST /populate``;
``POST /reset`` (re-enable every proxy, remove every toxic); ``GET|PATCH|DELETE
/proxies/{proxy}``; ``GET|POST /proxies/{proxy}/toxics``; ``GET|PATCH|DELETE
/proxies/{proxy}/toxics/{toxic}``. Errors come back as ``{"error": "...", "status": N}``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT_S = 5.0


class ToxicType(enum.StrEnum):
    """Toxiproxy's toxics and their attributes (all integers)."""

    LATENCY = "latency"  # latency (ms), jitter (ms)
    BANDWIDTH = "bandwidth"  # rate (KB/s)
    SLOW_CLOSE = "slow_close"  # delay (ms)
    TIMEOUT = "timeout"  # timeout (ms; 0 = swallow data and never close)
    RESET_PEER = "reset_peer"  # timeout (ms before the RST)
    SLICER = "slicer"  # average_size, size_variation (bytes), delay (us)
    LIMIT_DATA = "limit_data"  # bytes


class Stream(enum.StrEnum):
    """``downstream``: server -> client (the default); ``upstream``: client -> server."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


class ToxiproxyError(RuntimeError):
    """Toxiproxy answered with an error, or could not be reached.

    ``status`` is the HTTP status (0 when the server could not be reached) and
    ``message`` the server's own error text.
    """

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        where = f"toxiproxy {method} {path}"
        if status:
            super().__init__(f"{where}: {status} {message}")
        else:
            super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Toxic:
    name: str
    type: ToxicType
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Toxic:
        return cls(
            name=str(data["name"]),
            type=ToxicType(data["type"]),
            stream=Stream(data["stream"]),
            toxicity=float(data["toxicity"]),
            attributes={str(k): int(v) for k, v in (data.get("attributes") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Proxy:
    name: str
    listen: str  # "host:port"
    upstream: str  # "host:port"
    enabled: bool
    toxics: tuple[Toxic, ...] = field(default=())

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proxy:
        return cls(
            name=str(data["name"]),
            listen=str(data["listen"]),
            upstream=str(data["upstream"]),
            enabled=bool(data["enabled"]),
            toxics=tuple(Toxic.from_json(t) for t in data.get("toxics") or ()),
        )


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A proxy to create: ``listen`` and ``upstream`` are ``host:port``."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
        }


def _p(name: str) -> str:
    return quote(name, safe="")


class ToxiproxyClient:
    """``async with ToxiproxyClient("http://127.0.0.1:8474") as tp: await tp.version()``."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "pytest-operator"},
            trust_env=False,  # never send loopback traffic through an HTTP proxy
        )

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, body: object = None) -> Any:
        try:
            response = await self._http.request(
                method, path, json=body if body is not None else None
            )
        except httpx.TimeoutException as exc:
            raise ToxiproxyError(
                method, path, 0, f"no answer from {self.base_url} within {self.timeout}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ToxiproxyError(method, path, 0, f"cannot reach {self.base_url}: {exc!r}") from exc
        if response.is_success:
            if not response.content:
                return None
            try:
                return response.json()
            except json.JSONDecodeError:
                return response.text
        try:
            message = str(response.json().get("error") or response.text)
        except (json.JSONDecodeError, AttributeError):
            message = response.text.strip() or response.reason_phrase
        raise ToxiproxyError(method, path, response.status_code, message)

    # --- server ---------------------------------------------------------------------

    async def version(self) -> str:
        answer = await self._request("GET", "/version")
        if isinstance(answer, Mapping):
            return str(answer.get("version", answer))
        return str(answer).strip()

    async def reset(self) -> None:
        """Re-enable every proxy and remove every toxic."""
        await self._request("POST", "/reset")

    async def populate(self, proxies: Sequence[ProxySpec]) -> tuple[Proxy, ...]:
        """Create (or replace) these proxies in one call."""
        answer = await self._request("POST", "/populate", [p.to_json() for p in proxies])
        return tuple(Proxy.from_json(p) for p in answer["proxies"])

    # --- proxies --------------------------------------------------------------------

    async def proxies(self) -> dict[str, Proxy]:
        answer = await self._request("GET", "/proxies")
        return {name: Proxy.from_json(data) for name, data in answer.items()}

    async def create_proxy(
        self, name: str, listen: str, upstream: str, *, enabled: bool = True
    ) -> Proxy:
        spec = ProxySpec(name, listen, upstream, enabled)
        return Proxy.from_json(await self._request("POST", "/proxies", spec.to_json()))

    async def get_proxy(self, name: str) -> Proxy:
        return Proxy.from_json(await self._request("GET", f"/proxies/{_p(name)}"))

    async def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        body: dict[str, object] = {}
        if listen is not None:
            body["listen"] = listen
        if upstream is not None:
            body["upstream"] = upstream
        if enabled is not None:
            body["enabled"] = enabled
        if not body:
            raise ValueError("update_proxy: nothing to update (give listen, upstream or enabled)")
        return Proxy.from_json(await self._request("PATCH", f"/proxies/{_p(name)}", body))

    async def delete_proxy(self, name: str) -> None:
        await self._request("DELETE", f"/proxies/{_p(name)}")

    async def enable(self, name: str) -> Proxy:
        return await self.update_proxy(name, enabled=True)

    async def disable(self, name: str) -> Proxy:
        """Stop listening and close every connection through the proxy."""
        return await self.update_proxy(name, enabled=False)

    # --- toxics ---------------------------------------------------------------------

    async def toxics(self, proxy: str) -> tuple[Toxic, ...]:
        answer = await self._request("GET", f"/proxies/{_p(proxy)}/toxics")
        return tuple(Toxic.from_json(t) for t in answer)

    async def add_toxic(
        self,
        proxy: str,
        type: ToxicType,
        attributes: Mapping[str, int],
        *,
        name: str | None = None,
        stream: Stream = Stream.DOWNSTREAM,
        toxicity: float = 1.0,
    ) -> Toxic:
        if not 0.0 <= toxicity <= 1.0:
            raise ValueError(f"toxicity must be within [0, 1], got {toxicity}")
        body = {
            "name": name or f"{type}_{stream}",
            "type": str(ToxicType(type)),
            "stream": str(Stream(stream)),
            "toxicity": toxicity,
            "attributes": dict(attributes),
        }
        return Toxic.from_json(await self._request("POST", f"/proxies/{_p(proxy)}/toxics", body))

    async def get_toxic(self, proxy: str, toxic: str) -> Toxic:
        path = f"/proxies/{_p(proxy)}/toxics/{_p(toxic)}"
        return Toxic.from_json(await self._request("GET", path))

    async def update_toxic(
        self,
        proxy: str,
        toxic: str,
        *,
        attributes: Mapping[str, int] | None = None,
        toxicity: float | None = None,
    ) -> Toxic:
        body: dict[str, object] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        if not body:
            raise ValueError("update_toxic: nothing to update (give attributes or toxicity)")
        path = f"/proxies/{_p(proxy)}/toxics/{_p(toxic)}"
        return Toxic.from_json(await self._request("PATCH", path, body))

    async def remove_toxic(self, proxy: str, toxic: str) -> None:
        await self._request("DELETE", f"/proxies/{_p(proxy)}/toxics/{_p(toxic)}")
