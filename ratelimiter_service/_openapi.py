"""The node's OpenAPI document, written out rather than inferred from the handlers.

The handlers validate by hand (``_app``: one message per bad input, 422), so FastAPI
cannot see their rules; this document states them with the same constants: key length
and characters, the bounds of every number, the body size, which status each operation
can answer (401/403 only when the node has a token), and the content types (Prometheus
text for ``/metrics``). ``tests/service/test_openapi.py`` runs schemathesis with every
check against a real node to keep the two in step.

The document is JSON by nature (it is served as such), hence the plain dicts here.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from ._config import (
    KEY_PATTERN,
    MAX_BODY_BYTES,
    MAX_KEY_LENGTH,
    MAX_LIMIT,
    MAX_WINDOW_MS,
    Algorithm,
    Config,
    Mode,
)

MAX_BLOCKS = 1000
DEFAULT_BLOCKS = 100

Json = dict[str, Any]  # an OpenAPI fragment


def _key_schema() -> Json:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    }


_KEY_TEXT = (
    f"A rate limit key: 1 to {MAX_KEY_LENGTH} characters, none of them a control "
    "character (U+0000-U+001F, U+007F-U+009F); a lone surrogate, which only a JSON "
    "escape can make (not a character, so not in the pattern), is 422 too. Slashes are "
    "allowed, also in paths. Anything else is 422."
)


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: Json, optional: tuple[str, ...] = ()) -> Json:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _error(description: str) -> Json:
    return _json({"$ref": "#/components/schemas/Error"}, description)


_STR: Json = {"type": "string"}
_INT: Json = {"type": "integer"}
_NUM: Json = {"type": "number"}
_MODE: Json = {"type": "string", "enum": [m.value for m in Mode]}
_ALGORITHM: Json = {"type": "string", "enum": [a.value for a in Algorithm]}
_BAD_INPUT = _error(
    "Bad input: a key, body, field or query value outside the documented bounds, or a "
    f"body over {MAX_BODY_BYTES} bytes; the message names it."
)
_NOT_CONFIGURED = _error(
    "No limit is configured for the key: it has the node's default (the message says it)."
)
_REDIS_DOWN = _error("Redis did not answer in time: the change was not made.")


def _limit_schema(**extra: Json) -> Json:
    return _object(
        {
            "key": _STR,
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "window_ms": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_MS},
            "algorithm": _ALGORITHM,
            "configured": {"type": "boolean"},
            **extra,
        }
    )


def _operation(
    summary: str,
    responses: Json,
    *,
    key: bool = False,
    mutation: bool = False,
    token: bool = False,
    body: Json | None = None,
    description: str | None = None,
) -> Json:
    operation: Json = {"summary": summary, "responses": dict(responses)}
    if description is not None:
        operation["description"] = description
    if key:
        operation["parameters"] = [{"$ref": "#/components/parameters/Key"}]
        operation["responses"]["422"] = _BAD_INPUT
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "description": f"A JSON object of at most {MAX_BODY_BYTES} bytes; unknown fields "
            "are 422.",
            "content": {"application/json": {"schema": body}},
        }
        operation["responses"]["422"] = _BAD_INPUT
    if mutation and token:
        operation["security"] = [{"bearer": []}]
        operation["responses"]["401"] = _error("No bearer token.")
        operation["responses"]["403"] = _error("A wrong bearer token.")
    return operation


def build(config: Config) -> Json:
    """The OpenAPI 3.1 document of a node with this configuration."""
    token = config.token is not None
    limit_ok = _json(_limit_schema(), "The key's limit.")
    check_body = _object(
        {
            "key": _key_schema(),
            "cost": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": 1,
                "description": "Units this request takes. More than the key's current limit "
                "is 409 (the limit is the key's state, set by PUT /api/limits/{key}).",
            },
        },
        optional=("cost",),
    )
    decision = _object(
        {
            "allowed": {"type": "boolean"},
            "limit": {"type": "integer", "minimum": 1},
            "remaining": {"type": "integer", "minimum": 0},
            "retry_after_ms": {"type": "integer", "minimum": 0},
            "reset_ms": {"type": "integer", "minimum": 0},
            "node": _STR,
            "mode": _MODE,
            "algorithm": _ALGORITHM,
        }
    )
    count = {"type": ["integer", "null"], "minimum": 0}
    counter = _object(
        {
            "key": _STR,
            "count": count,
            "limit": _INT,
            "remaining": count,
            "window_ms": _INT,
            "algorithm": _ALGORITHM,
            "source": {"type": "string", "enum": ["redis", "local", "unavailable"]},
            "configured": {"type": "boolean"},
        }
    )
    node_view = _object(
        {
            "id": _STR,
            "address": _STR,
            "state": {"type": "string", "enum": ["Up", "Down"]},
            "mode": _STR,
            "started_at": _NUM,
            "last_seen_ms": _INT,
            "age_ms": _INT,
            "policy": _STR,
            "clock": _STR,
            "heartbeat_ms": _INT,
            "pid": _INT,
        }
    )
    block = _object(
        {
            "key": _STR,
            "at_ms": _INT,
            "cost": _INT,
            "limit": _INT,
            "window_ms": _INT,
            "algorithm": _ALGORITHM,
            "retry_after_ms": _INT,
            "mode": _MODE,
        }
    )
    header = {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    paths: Json = {
        "/check": {
            "post": _operation(
                "Take cost units from the key's limit, or be denied",
                {
                    "200": {
                        **_json(decision, "The decision (denied is 200 with allowed false)."),
                        "headers": {
                            "RateLimit-Limit": header,
                            "RateLimit-Remaining": header,
                            "RateLimit-Reset": header,
                            "Retry-After": {
                                **header,
                                "required": False,
                                "description": "Only when denied.",
                            },
                        },
                    },
                    "409": _error("The cost is more than the key's current limit."),
                },
                body=check_body,
            )
        },
        "/healthz": {
            "get": _operation(
                "The node is alive; its clock",
                {
                    "200": _json(
                        _object(
                            {
                                "status": {"const": "ok"},
                                "node": _STR,
                                "started_at": _NUM,
                                "config_changed_at": {"type": ["number", "null"]},
                                "uptime_s": _NUM,
                                "now_ms": _INT,
                                "mode": _MODE,
                            }
                        ),
                        "Alive.",
                    )
                },
            )
        },
        "/readyz": {
            "get": _operation(
                "Redis is reachable",
                {
                    "200": _json(
                        _object(
                            {
                                "ready": {"const": True},
                                "redis": {"const": "up"},
                                "mode": {"const": "normal"},
                                "node": _STR,
                            }
                        ),
                        "Ready.",
                    ),
                    "503": _json(
                        _object(
                            {
                                "ready": {"const": False},
                                "redis": {"const": "down"},
                                "mode": _MODE,
                                "policy": _STR,
                                "error": _STR,
                                "node": _STR,
                            }
                        ),
                        "Redis unreachable: the node decides by its policy.",
                    ),
                },
            )
        },
        "/api/nodes": {
            "get": _operation(
                "Every node in the registry, Up or Down",
                {
                    "200": _json(
                        _object({"node": _STR, "nodes": {"type": "array", "items": node_view}}),
                        "The registry.",
                    ),
                    "503": _REDIS_DOWN,
                },
            )
        },
        "/api/counters": {
            "get": _operation(
                "Configured and recently served keys and their counters",
                {
                    "200": _json(
                        _object(
                            {
                                "node": _STR,
                                "mode": _MODE,
                                "counters": {"type": "array", "items": counter},
                            }
                        ),
                        "The counters; count and remaining are null when Redis is "
                        "unreachable and the policy is not local.",
                    )
                },
            )
        },
        "/api/counters/{key}/reset": {
            "post": _operation(
                "Forget the key's counter",
                {
                    "200": _json(
                        _object({"key": _STR, "reset": {"const": True}, "node": _STR}),
                        "Reset.",
                    ),
                    "503": _REDIS_DOWN,
                },
                key=True,
                mutation=True,
                token=token,
            )
        },
        "/api/limits/{key}": {
            "get": _operation(
                "The key's configured limit",
                {"200": limit_ok, "404": _NOT_CONFIGURED},
                key=True,
            ),
            "put": _operation(
                "Configure the key's limit, for every node",
                {"200": limit_ok, "503": _REDIS_DOWN},
                key=True,
                mutation=True,
                token=token,
                body=_object(
                    {
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        "window_ms": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_WINDOW_MS,
                        },
                        "algorithm": {
                            **_ALGORITHM,
                            "default": config.default_limit.algorithm.value,
                        },
                    },
                    optional=("algorithm",),
                ),
            ),
            "delete": _operation(
                "Remove the key's limit: it goes back to the node's default",
                {
                    "200": _json(
                        _limit_schema(deleted={"const": True}),
                        "Deleted; the body shows the default limit the key has now.",
                    ),
                    "404": _NOT_CONFIGURED,
                    "503": _REDIS_DOWN,
                },
                key=True,
                mutation=True,
                token=token,
            ),
        },
        "/api/blocks": {
            "get": {
                **_operation(
                    "The most recent denials on this node, newest first",
                    {
                        "200": _json(
                            _object({"node": _STR, "blocks": {"type": "array", "items": block}}),
                            "Denials.",
                        ),
                        "422": _BAD_INPUT,
                    },
                ),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_BLOCKS,
                            "default": DEFAULT_BLOCKS,
                        },
                    }
                ],
            }
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (ratelimiter_*)",
                {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": _STR}},
                    }
                },
            )
        },
    }
    document: Json = {
        "openapi": "3.1.0",
        "info": {
            "title": "ratelimiter",
            "version": "1",
            "description": "One node of the distributed rate limiter. Bad input is 422 "
            'with {"error": message}; a method a path does not have is 405 with Allow.',
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _object({"error": _STR})},
            "parameters": {
                "Key": {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "description": _KEY_TEXT,
                    "schema": _key_schema(),
                },
            },
        },
    }
    if token:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The node's --token; required by mutations.",
            },
        }
    return document
