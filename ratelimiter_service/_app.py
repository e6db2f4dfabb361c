"""The HTTP API of one node.

``POST /check`` is the hot path: it is served by a small ASGI handler of its own (no
routing, no model validation layers). Everything else is a FastAPI app.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from . import _openapi
from ._config import (
    MAX_BODY_BYTES,
    MAX_LIMIT,
    MAX_WINDOW_MS,
    Algorithm,
    LimitSpec,
    Mode,
    validate_key,
)
from ._limiter import CounterView, Limiter, uptime_s
from ._store import RedisUnavailable

CHECK_FIELDS = ("key", "cost")
LIMIT_FIELDS = ("limit", "window_ms", "algorithm")

# ASGI's own types are dicts by definition
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _KeyConvertor(Convertor[str]):
    """A key in a path: any characters, newlines too (Starlette's ``path`` stops at one),
    so that ``_key`` judges every key and a bad one is 422, not a routing 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key", _KeyConvertor())


class BadInput(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadInput("client disconnected", 400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadInput(f"body too large: more than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_object(body: bytes, fields: tuple[str, ...]) -> dict[str, object]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadInput("body must be a JSON object")
    for name in data:
        if name not in fields:
            raise BadInput(f"unknown field {json.dumps(name)} (valid: {', '.join(fields)})")
    return data


def _int_field(data: dict[str, object], name: str, low: int, high: int) -> int:
    value = data.get(name)
    if value is None:
        raise BadInput(f"{name} is required")
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON has one number type: 5.0 is the integer 5 (JSON Schema)
    if type(value) is not int:
        raise BadInput(f"{name} must be an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}, got {value}")
    return value


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise BadInput("key must be a string")
    reason = validate_key(key)
    if reason is not None:
        raise BadInput(reason)
    return key


def _headers(status_body: bytes, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(status_body)).encode()),
        *extra,
    ]


class CheckHandler:
    """POST /check, straight on ASGI."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.node = limiter.config.node_id
        # the answer's JSON is formatted by hand (json.dumps with separators builds an
        # encoder per call); the strings in it are encoded once here
        self._tail = {
            (mode, algorithm): (
                b',"node":%s,"mode":%s,"algorithm":%s}'
                % tuple(json.dumps(v).encode() for v in (self.node, mode.value, algorithm.value))
            )
            for mode in Mode
            for algorithm in Algorithm
        }

    async def __call__(self, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            data = _json_object(await _read_body(receive), CHECK_FIELDS)
            key = _key(data.get("key"))
            spec = self.limiter.spec_for(key)
            cost = _int_field(data, "cost", 1, MAX_LIMIT) if "cost" in data else 1
            if cost > spec.limit:
                raise BadInput(
                    f"cost {cost} is more than the limit {spec.limit} of key {json.dumps(key)}",
                    409,
                )
        except BadInput as error:
            await _send(send, error.status, {"error": str(error)}, [])
            return
        result = await self.limiter.check(key, cost, spec)
        body = b'{"allowed":%s,"limit":%d,"remaining":%d,"retry_after_ms":%d,"reset_ms":%d%s' % (
            b"true" if result.allowed else b"false",
            spec.limit,
            result.remaining,
            result.retry_after_ms,
            result.reset_ms,
            self._tail[result.mode, spec.algorithm],
        )
        reset_s = -(-(result.retry_after_ms or result.reset_ms) // 1000)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"ratelimit-limit", b"%d" % spec.limit),
            (b"ratelimit-remaining", b"%d" % result.remaining),
            (b"ratelimit-reset", b"%d" % reset_s),
        ]
        if not result.allowed:
            headers.append((b"retry-after", b"%d" % max(reset_s, 1)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.limiter.metrics.check_latency.observe(time.perf_counter() - started)


async def _send(
    send: Send, status: int, payload: dict[str, object], extra: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": _headers(body, extra)})
    await send({"type": "http.response.body", "body": body})


def _counter_json(view: CounterView) -> dict[str, object]:
    return {
        "key": view.key,
        "count": view.count,
        "limit": view.spec.limit,
        "remaining": view.remaining,
        "window_ms": view.spec.window_ms,
        "algorithm": view.spec.algorithm.value,
        "source": view.source,
        "configured": view.configured,
    }


def _limit_json(key: str, spec: LimitSpec, configured: bool) -> dict[str, object]:
    return {
        "key": key,
        "limit": spec.limit,
        "window_ms": spec.window_ms,
        "algorithm": spec.algorithm.value,
        "configured": configured,
    }


def build_api(limiter: Limiter) -> FastAPI:
    config = limiter.config
    node = config.node_id
    # the document is written out (_openapi), so FastAPI's own is off and served here
    api = FastAPI(title="ratelimiter", openapi_url=None, docs_url=None, redoc_url=None)
    document = _openapi.build(config)

    @api.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, error.status_code, error.headers)

    @api.exception_handler(RedisUnavailable)
    async def unavailable(request: Request, error: RedisUnavailable) -> JSONResponse:
        return JSONResponse({"error": f"redis unavailable: {error}"}, status_code=503)

    def authorize(request: Request) -> None:
        if config.token is None:
            return
        header = request.headers.get("authorization")
        if header is None or not header.startswith("Bearer "):
            raise BadInput("missing bearer token (Authorization: Bearer <token>)", 401)
        given = header.removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, config.token.encode()):
            raise BadInput("wrong bearer token", 403)

    async def body(request: Request, fields: tuple[str, ...]) -> dict[str, object]:
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > MAX_BODY_BYTES:
                raise BadInput(f"body too large: more than {MAX_BODY_BYTES} bytes")
        return _json_object(bytes(chunks), fields)

    def not_configured(key: str) -> str:
        spec = config.default_limit
        return (
            f"no limit configured for key {json.dumps(key)}: it has the default, "
            f"{spec.limit} per {spec.window_ms} ms by {spec.algorithm.value}"
        )

    @api.get("/healthz")
    async def healthz() -> dict[str, object]:
        now = time.time()
        return {
            "status": "ok",
            "node": node,
            "started_at": limiter.started_at,
            "config_changed_at": limiter.config_changed_at,
            "uptime_s": uptime_s(limiter),
            "now_ms": int(now * 1000),
            "mode": limiter.mode.value,
        }

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        if limiter.mode is Mode.NORMAL:
            return JSONResponse({"ready": True, "redis": "up", "mode": "normal", "node": node})
        return JSONResponse(
            {
                "ready": False,
                "redis": "down",
                "mode": limiter.mode.value,
                "policy": config.policy.value,
                "error": limiter.last_error or "redis unreachable",
                "node": node,
            },
            status_code=503,
        )

    @api.get("/api/nodes")
    async def nodes() -> dict[str, object]:
        views = await limiter.nodes()
        return {"node": node, "nodes": [view.to_json() for view in views]}

    @api.get("/api/counters")
    async def counters() -> dict[str, object]:
        views = await limiter.counters()
        return {
            "node": node,
            "mode": limiter.mode.value,
            "counters": [_counter_json(view) for view in views],
        }

    @api.post("/api/counters/{key:key}/reset")
    async def reset(key: str, request: Request) -> dict[str, object]:
        authorize(request)
        await limiter.reset(_key(key))
        return {"key": key, "reset": True, "node": node}

    @api.get("/api/limits/{key:key}")
    async def get_limit(key: str) -> JSONResponse:
        configured = limiter.configured_limit(_key(key))
        if configured is None:
            return JSONResponse({"error": not_configured(key)}, 404)
        return JSONResponse(_limit_json(key, configured, True))

    @api.put("/api/limits/{key:key}")
    async def put_limit(key: str, request: Request) -> dict[str, object]:
        authorize(request)
        _key(key)
        data = await body(request, LIMIT_FIELDS)
        algorithm_name = data.get("algorithm", config.default_limit.algorithm.value)
        try:
            algorithm = Algorithm(algorithm_name)
        except ValueError:
            valid = ", ".join(a.value for a in Algorithm)
            raise BadInput(
                f"algorithm must be one of {valid}, got {json.dumps(algorithm_name)}"
            ) from None
        spec = LimitSpec(
            limit=_int_field(data, "limit", 1, MAX_LIMIT),
            window_ms=_int_field(data, "window_ms", 1, MAX_WINDOW_MS),
            algorithm=algorithm,
        )
        await limiter.set_limit(key, spec)
        return _limit_json(key, spec, True)

    @api.delete("/api/limits/{key:key}")
    async def delete_limit(key: str, request: Request) -> JSONResponse:
        authorize(request)
        removed = await limiter.delete_limit(_key(key))
        if not removed:
            return JSONResponse({"error": not_configured(key)}, 404)
        return JSONResponse({"key": key, "deleted": True, **_limit_json(key, config.default_limit,
                                                                          False)})  # fmt: skip

    @api.get("/api/blocks")
    async def blocks(limit: int = _openapi.DEFAULT_BLOCKS) -> dict[str, object]:
        if not 1 <= limit <= _openapi.MAX_BLOCKS:
            raise BadInput(f"limit must be between 1 and {_openapi.MAX_BLOCKS}, got {limit}")
        return {
            "node": node,
            "blocks": [
                {
                    "key": b.key,
                    "at_ms": b.at_ms,
                    "cost": b.cost,
                    "limit": b.limit,
                    "window_ms": b.window_ms,
                    "algorithm": b.algorithm.value,
                    "retry_after_ms": b.retry_after_ms,
                    "mode": b.mode.value,
                }
                for b in limiter.blocks(limit)
            ],
        }

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(limiter.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(document)

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ratelimiter")

    return api


class _Methods:
    """The methods each path has, over every route: Starlette's own 405 names only the
    first route that matches the path (``Allow: GET`` on /api/limits/{key}, which also
    has PUT and DELETE)."""

    def __init__(self, api: FastAPI) -> None:
        self.routes = [r for r in api.routes if isinstance(r, Route) and r.methods]

    def allowed(self, path: str) -> set[str]:
        allowed = {"POST"} if path == "/check" else set()
        for route in self.routes:
            if route.path_regex.match(path):
                allowed |= route.methods or set()
        return allowed


async def _not_allowed(send: Send, method: str, path: str, allowed: set[str]) -> None:
    """405 with the Allow header RFC 9110 requires."""
    names = ", ".join(sorted(allowed))
    await _send(
        send,
        405,
        {"error": f"method {method} not allowed on {path} (allowed: {names})"},
        [(b"allow", names.encode())],
    )


class App:
    """The node's ASGI app: /check fast path, the API, and the lifespan of the limiter."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.check = CheckHandler(limiter)
        self.api = build_api(limiter)
        self.methods = _Methods(self.api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path, method = scope["path"], scope["method"]
            if path == "/check" and method == "POST":
                await self.check(receive, send)
                return
            allowed = self.methods.allowed(path)
            if allowed and method not in allowed:
                await _not_allowed(send, method, path, allowed)
                return
            await self.api(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.limiter.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.limiter.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
