"""Command line and environment configuration of one rate limiter node.

Every option is a flag and also an environment variable ``RL_<UPPER_NAME>``
(``--redis-url`` is ``RL_REDIS_URL``); the flag wins. A bad value ends the
process with one line on stderr that names the option, the value and what is
valid, and exit status 2.
"""

from __future__ import annotations

import argparse
import enum
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit


class Algorithm(enum.Enum):
    SLIDING_LOG = "sliding_log"
    SLIDING_WINDOW = "sliding_window"
    FIXED_WINDOW = "fixed_window"
    GCRA = "gcra"


class Policy(enum.Enum):
    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"
    LOCAL = "local"


class ClockSource(enum.Enum):
    REDIS = "redis"
    NODE = "node"


class Mode(enum.Enum):
    NORMAL = "normal"
    DEGRADED = "degraded"


MAX_LIMIT = 1_000_000_000
MAX_WINDOW_MS = 86_400_000
MAX_KEY_LENGTH = 256
MAX_BODY_BYTES = 4096
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A limit: at most ``limit`` units of cost per ``window_ms``, by ``algorithm``."""

    limit: int
    window_ms: int
    algorithm: Algorithm


@dataclass(frozen=True, slots=True)
class Config:
    node_id: str
    host: str
    port: int
    redis_url: str
    advertise_address: str
    policy: Policy
    clock: ClockSource
    token: str | None
    namespace: str
    default_limit: LimitSpec
    redis_timeout_ms: int
    heartbeat_ms: int
    log_level: str


class ConfigError(Exception):
    """A bad option value; the message is the one line shown to the user."""


_OPTIONS: tuple[tuple[str, str | None, str], ...] = (
    # (flag, default, help)
    ("--node-id", None, "this node's id in the registry (required)"),
    ("--host", "127.0.0.1", "address to listen on"),
    ("--port", None, "port to listen on (required)"),
    ("--redis-url", None, "redis://HOST:PORT/DB (required)"),
    ("--advertise-address", None, "address written to the registry (default http://HOST:PORT)"),
    ("--policy", "fail_open", "when Redis is unreachable: fail_open, fail_closed or local"),
    ("--clock", "redis", "time source of the scripts: redis (TIME) or node (this process)"),
    ("--token", None, "bearer token required by mutating API calls"),
    ("--namespace", "rl", "prefix of every Redis key"),
    ("--default-limit", "100", "limit of keys without a configured one"),
    ("--default-window-ms", "1000", "window of keys without a configured one"),
    ("--default-algorithm", "sliding_log", "algorithm of keys without a configured one"),
    ("--redis-timeout-ms", "100", "connect and read timeout of Redis calls"),
    ("--heartbeat-ms", "250", "registry heartbeat period"),
    ("--log-level", "info", "critical, error, warning, info or debug"),
)


def env_name(flag: str) -> str:
    return "RL_" + flag.lstrip("-").replace("-", "_").upper()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ratelimiter_service",
        description="A distributed rate limiter node sharing its state in Redis.",
        epilog="Every option can also be set as an environment variable RL_<NAME>, "
        "for example RL_REDIS_URL; the flag wins.",
    )
    for flag, default, help_text in _OPTIONS:
        shown = f" [env {env_name(flag)}]" + (f" (default {default})" if default else "")
        parser.add_argument(flag, default=None, help=help_text + shown)
    return parser


_E = TypeVar("_E", bound=enum.Enum)


def _choice(flag: str, value: str, kind: type[_E]) -> _E:
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise ConfigError(f"{flag}: invalid value {value!r} (valid: {valid})") from None


def _int(flag: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        raise ConfigError(
            f"{flag}: invalid value {value!r} (valid: an integer from {low} to {high})"
        ) from None
    if not low <= number <= high:
        raise ConfigError(
            f"{flag}: invalid value {value!r} (valid: an integer from {low} to {high})"
        )
    return number


# What a key may not contain: the control characters (Unicode category Cc, the same
# 65 code points in every Unicode version) and lone surrogates (not characters; only a
# JSON body's \ud800 escape makes one, and Redis could not encode it). A fixed set, so
# nodes on different Pythons (Unicode databases) agree on which keys are valid, and one
# short pattern states it in the OpenAPI document (without the surrogates: a pattern
# matches characters, and regex engines over Unicode scalar values reject the range).
KEY_CONTROLS = r"\u0000-\u001f\u007f-\u009f"
KEY_PATTERN = f"^[^{KEY_CONTROLS}]{{1,{MAX_KEY_LENGTH}}}$"
_KEY_FORBIDDEN = re.compile(f"[{KEY_CONTROLS}\\ud800-\\udfff]")


def validate_key(key: str) -> str | None:
    """The reason ``key`` is not a valid rate limit key, or None when it is."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"key must be 1 to {MAX_KEY_LENGTH} characters long, got {len(key)}"
    # isprintable() is the fast path: a printable key has no control character or surrogate
    if not key.isprintable() and _KEY_FORBIDDEN.search(key):
        return (
            "key must not contain control characters (U+0000-U+001F, U+007F-U+009F) or surrogates"
        )
    return None


def resolve(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Build the configuration from flags and environment, or raise ConfigError."""
    args = vars(_parser().parse_args(list(argv)))
    raw: dict[str, str | None] = {}
    for flag, default, _ in _OPTIONS:
        dest = flag.lstrip("-").replace("-", "_")
        value = args[dest]
        if value is None:
            value = environ.get(env_name(flag))
        if value is None:
            value = default
        raw[flag] = value

    def required(flag: str) -> str:
        value = raw[flag]
        if value is None or value == "":
            raise ConfigError(f"{flag}: missing (required; or set {env_name(flag)})")
        return value

    def text(flag: str) -> str:
        value = raw[flag]
        assert value is not None  # every non-required option has a default
        return value

    node_id = required("--node-id")
    if validate_key(node_id) is not None or any(c.isspace() for c in node_id):
        raise ConfigError(
            f"--node-id: invalid value {node_id!r} "
            f"(valid: 1 to {MAX_KEY_LENGTH} characters, no control characters, no spaces)"
        )
    port = _int("--port", required("--port"), 1, 65535)
    redis_url = required("--redis-url")
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss", "unix") or (
        parts.scheme != "unix" and not parts.hostname
    ):
        raise ConfigError(
            f"--redis-url: invalid value {redis_url!r} "
            "(valid: redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH)"
        )
    host = text("--host")
    advertise = raw["--advertise-address"] or f"http://{host}:{port}"
    namespace = text("--namespace")
    if not namespace or not namespace.isprintable() or any(c.isspace() for c in namespace):
        raise ConfigError(
            f"--namespace: invalid value {namespace!r} (valid: printable characters, no spaces)"
        )
    log_level = text("--log-level").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"--log-level: invalid value {text('--log-level')!r} (valid: {', '.join(LOG_LEVELS)})"
        )
    token = raw["--token"] or None
    return Config(
        node_id=node_id,
        host=host,
        port=port,
        redis_url=redis_url,
        advertise_address=advertise,
        policy=_choice("--policy", text("--policy"), Policy),
        clock=_choice("--clock", text("--clock"), ClockSource),
        token=token,
        namespace=namespace,
        default_limit=LimitSpec(
            limit=_int("--default-limit", text("--default-limit"), 1, MAX_LIMIT),
            window_ms=_int("--default-window-ms", text("--default-window-ms"), 1, MAX_WINDOW_MS),
            algorithm=_choice("--default-algorithm", text("--default-algorithm"), Algorithm),
        ),
        redis_timeout_ms=_int("--redis-timeout-ms", text("--redis-timeout-ms"), 1, 60_000),
        heartbeat_ms=_int("--heartbeat-ms", text("--heartbeat-ms"), 10, 60_000),
        log_level=log_level,
    )


def load_or_exit(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    try:
        return resolve(argv, environ)
    except ConfigError as error:
        _fail(str(error))


def _fail(message: str) -> NoReturn:
    print(f"ratelimiter_service: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def from_process() -> Config:
    return load_or_exit(sys.argv[1:], os.environ)
