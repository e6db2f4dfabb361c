"""One pipelined Redis connection for the decision scripts: an asyncio.Protocol and hiredis.

Commands go out already packed in RESP; replies are parsed by hiredis as bytes arrive
and each one resolves the next waiting future, in order. Several pipelines can be in
flight on the one connection (Redis answers in order). No per-command coroutine, lock
or timer: one timer per connection watches for silence. When Redis says nothing for
``timeout_s`` while replies are due, or the connection drops, every waiting call fails
with ``RedisUnavailable`` and the connection is dropped; the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import hiredis
from redis.exceptions import NoScriptError, ResponseError


class RedisUnavailable(Exception):
    """Redis could not be reached in time (refused, timed out, connection lost)."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where the pipelined connection goes, and what it says first."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host and port
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    def hello(self) -> list[tuple[bytes, ...]]:
        commands: list[tuple[bytes, ...]] = []
        if self.password is not None:
            user = () if self.username is None else (self.username.encode(),)
            commands.append((b"AUTH", *user, self.password.encode()))
        if self.db:
            commands.append((b"SELECT", str(self.db).encode()))
        return commands


def pack(command: tuple[bytes, ...]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for part in command:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class PipeProtocol(asyncio.Protocol):
    """The connection: writes packed commands, hands each reply to the next waiter."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[Callable[[object], None]] = deque()
        self.lost: RedisUnavailable | None = None
        self._heard = 0.0
        self._watch: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are one
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes, callbacks: list[Callable[[object], None]]) -> None:
        """Write commands; ``callbacks[i]`` gets the i-th reply (an error as an exception).

        On a lost connection every callback gets the reason at once.
        """
        if self.lost is not None or self.transport is None:
            error = self.lost or RedisUnavailable("ConnectionError: not connected")
            for callback in callbacks:
                callback(error)
            return
        if not self.waiting:
            self._heard = time.monotonic()
            if self._watch is None:
                self._watch = self._loop.call_later(self.timeout_s, self._check_silence)
        self.waiting.extend(callbacks)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            while waiting:
                reply = reader.gets()
                if reply is False:
                    break
                if isinstance(reply, hiredis.ReplyError):
                    reply = _reply_error(str(reply))
                waiting.popleft()(reply)
        except hiredis.ProtocolError as error:
            self.fail(RedisUnavailable(f"ProtocolError: {error}"))
            return
        self._heard = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"{type(exc).__name__}: {exc}" if exc else "ConnectionError: closed by Redis"
        self.fail(RedisUnavailable(reason))

    def _check_silence(self) -> None:
        self._watch = None
        if self.lost is not None or not self.waiting:
            return
        silent = time.monotonic() - self._heard
        if silent >= self.timeout_s:
            self.fail(RedisUnavailable(f"TimeoutError: no reply from Redis in {silent:.3f} s"))
        else:
            self._watch = self._loop.call_later(self.timeout_s - silent, self._check_silence)

    def fail(self, error: RedisUnavailable) -> None:
        """Drop the connection; every waiting call gets ``error``."""
        if self.lost is None:
            self.lost = error
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.transport is not None:
            self.transport.abort()
        waiting, self.waiting = self.waiting, deque()
        for callback in waiting:
            callback(error)


async def open_pipe(address: Address, timeout_s: float) -> PipeProtocol:
    """Connect (within ``timeout_s``) and say AUTH/SELECT when the address asks for it."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            if address.path is not None:
                _, protocol = await loop.create_unix_connection(
                    lambda: PipeProtocol(timeout_s), address.path
                )
            else:
                _, protocol = await loop.create_connection(
                    lambda: PipeProtocol(timeout_s),
                    address.host,
                    address.port,
                    ssl=ssl.create_default_context() if address.tls else None,
                )
    except (OSError, TimeoutError) as error:
        raise RedisUnavailable(f"{type(error).__name__}: {error or 'connect timed out'}") from None
    hello = address.hello()
    if hello:
        replies: list[asyncio.Future[object]] = [loop.create_future() for _ in hello]
        protocol.send(b"".join(pack(c) for c in hello), [_setter(f) for f in replies])
        try:
            await asyncio.gather(*replies)
        except ResponseError as error:  # a wrong password or db: the same as unreachable
            failure = RedisUnavailable(f"{type(error).__name__}: {error}")
            protocol.fail(failure)
            raise failure from None
    return protocol


def _setter(future: asyncio.Future[object]) -> Callable[[object], None]:
    def resolve(reply: object) -> None:
        if not future.done():
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    return resolve
