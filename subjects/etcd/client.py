"""etcd's requester: a register per key (read, write, compare-and-set) through the v3 JSON
gateway.

Each request goes to one member through its client link (the Toxiproxy proxy), so a cut
client link shows as that member's errors. Keys live under :data:`KEY_PREFIX` (which the
session's reset deletes); values are stored as given.

- READ: a range of the key. ``reads="linearizable"`` (etcd's default, ``serializable``
  false): the member confirms with the leader's quorum before answering, so a member
  without quorum cannot serve it. ``reads="serializable"``: the member answers from its
  own state, however old. The result is the value, or None when the key is absent.
- WRITE: a put of the value.
- CAS: one transaction: if the key's value equals ``expected`` (``expected`` None: the key
  does not exist, its ``create_revision`` is 0), put the new value (``ok``); otherwise
  range the key, so a failed CAS is ``rejected`` with the value it saw (None: absent),
  read inside the same linearizable transaction.

Outcomes, as Jepsen's etcd client classifies errors (``jepsen.etcd.client/remap-errors``):
a read changes nothing, so any failure of a read is ``error``. A write or CAS that surely
never reached etcd (the connection was refused or never opened) or that etcd refused
before proposing it (:data:`DEFINITE_CODES`, :data:`DEFINITE_MESSAGES`) is ``error``; any
other error reply (``etcdserver: request timed out``, ``leader changed``, ``no leader``: the
proposal may still commit) or a transport failure after the request left (reset, no answer
within the timeout) is ``timeout``: indeterminate, with the reason as detail. etcd itself
gives up on a request only after 5 s + 2 x the election timeout, so without a quorum
clients see timeouts, not errors. A call of a kind etcd does not take is ``error``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping
from typing import Literal

import httpx

from pytest_operator import Call, OpKind, Outcome, Response

KEY_PREFIX = "pytest-operator/workload/"
TIMEOUT = 1.0
Reads = Literal["linearizable", "serializable"]
READS: tuple[Reads, ...] = ("linearizable", "serializable")
KINDS = (OpKind.READ, OpKind.WRITE, OpKind.CAS)

DEFINITE_CODES = {
    3: "INVALID_ARGUMENT",  # checked before the request is proposed (no key, too large...)
    5: "NOT_FOUND",
    8: "RESOURCE_EXHAUSTED",  # too many requests, or a message over gRPC's limit
    11: "OUT_OF_RANGE",  # a compacted revision
}
"""gRPC codes of error replies after which a write surely did not take effect (Jepsen:
not-found, duplicate key, revision compacted, too many requests are definite)."""
DEFINITE_MESSAGES = ("raft: stopped", "etcdserver: too many requests")
"""Error messages Jepsen's etcd client counts as definite failures."""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text, validate=True).decode()


def prefix_range(prefix: str) -> dict[str, str]:
    """The ``key`` / ``range_end`` pair of every key starting with ``prefix``."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])  # the prefix's last byte + 1 (no 0xff here)
    return {"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}


class _Failed(Exception):
    """A request that did not come back with an answer: its response, already classified."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.detail)
        self.response = response


class EtcdClient:
    """A :class:`~pytest_operator.Requester` for etcd members.

    ``urls`` maps member name -> base URL (its client link); ``timeout`` bounds one
    request, connecting included; ``reads``: ``"linearizable"`` or ``"serializable"``.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        timeout: float = TIMEOUT,
        prefix: str = KEY_PREFIX,
        reads: str = "linearizable",
    ) -> None:
        if not urls:
            raise ValueError("EtcdClient needs at least one member URL")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not prefix:
            raise ValueError("the key prefix cannot be empty")
        if reads not in READS:
            raise ValueError(f"reads={reads!r}: invalid value; valid values: {', '.join(READS)}")
        self.urls = dict(urls)
        self.timeout = timeout
        self.prefix = prefix
        self.serializable = reads == "serializable"
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def __call__(self, target: str, call: Call) -> Response:
        if call.kind == OpKind.READ:
            return await self.read(target, call.key)
        if call.kind == OpKind.WRITE:
            if call.value is None:
                return Response(Outcome.ERROR, f"write {call.key}: no value to write")
            return await self.put(target, call.key, call.value)
        if call.kind == OpKind.CAS:
            if call.value is None:
                return Response(Outcome.ERROR, f"cas {call.key}: no new value")
            return await self.cas(target, call.key, call.expected, call.value)
        return Response(
            Outcome.ERROR,
            f"etcd takes {', '.join(KINDS)} calls; got a '{call.kind}' call on {call.key!r}",
        )

    async def read(self, target: str, key: str) -> Response:
        """The key's value (None: absent), linearizable or serializable as configured."""
        body = {"key": b64(self.prefix + key), "serializable": self.serializable}
        what = f"read {key}"
        try:
            reply = await self._post(target, "/v3/kv/range", body, what, writes=False)
        except _Failed as failed:
            return failed.response
        try:
            return Response(Outcome.OK, result=_value_of(reply))
        except ValueError as exc:
            return Response(Outcome.ERROR, f"{what}: {exc}")

    async def put(self, target: str, key: str, value: str) -> Response:
        body = {"key": b64(self.prefix + key), "value": b64(value)}
        what = f"write {key}={_short(value)}"
        try:
            await self._post(target, "/v3/kv/put", body, what, writes=True)
        except _Failed as failed:
            return failed.response
        return Response(Outcome.OK)

    async def cas(self, target: str, key: str, expected: str | None, value: str) -> Response:
        """Write ``value`` if the key holds ``expected`` (None: the key is absent); a failed
        compare is ``rejected`` with the value found (None: absent)."""
        raw = b64(self.prefix + key)
        compare: dict[str, object]
        if expected is None:
            compare = {"key": raw, "target": "CREATE", "result": "EQUAL", "create_revision": 0}
        else:
            compare = {"key": raw, "target": "VALUE", "result": "EQUAL", "value": b64(expected)}
        body = {
            "compare": [compare],
            "success": [{"request_put": {"key": raw, "value": b64(value)}}],
            "failure": [{"request_range": {"key": raw}}],
        }
        what = f"cas {key} {_short(expected)}->{_short(value)}"
        try:
            reply = await self._post(target, "/v3/kv/txn", body, what, writes=True)
        except _Failed as failed:
            return failed.response
        if reply.get("succeeded") is True:
            return Response(Outcome.OK)
        responses = reply.get("responses")
        found = responses[0].get("response_range") if isinstance(responses, list) else None
        if not isinstance(found, dict):
            # the compare failed and the range's answer is missing: what it saw is unknown
            return Response(Outcome.REJECTED, f"{what}: compare failed, no range in {reply!r}")
        try:
            current = _value_of(found)
        except ValueError as exc:
            return Response(Outcome.REJECTED, f"{what}: compare failed; {exc}")
        return Response(Outcome.REJECTED, f"{what}: found {current!r}", result=current)

    async def _post(
        self, target: str, path: str, body: object, what: str, *, writes: bool
    ) -> dict[str, object]:
        """The reply of a 200 answer without an error; otherwise raises :class:`_Failed`
        with the outcome classified (``writes``: the request may change state)."""
        try:
            base = self.urls[target]
        except KeyError:
            known = ", ".join(sorted(self.urls))
            raise ValueError(f"unknown target {target!r} (known: {known})") from None
        unknown = Outcome.TIMEOUT if writes else Outcome.ERROR
        try:
            async with asyncio.timeout(self.timeout):
                r = await self._http.post(f"{base}{path}", content=json.dumps(body))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # no connection was made: the request never left
            raise _Failed(
                Response(Outcome.ERROR, f"{what}: not sent: {type(exc).__name__}: {exc}")
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise _Failed(
                Response(unknown, f"{what}: no answer within {self.timeout:g} s")
            ) from None
        except httpx.HTTPError as exc:
            raise _Failed(
                Response(unknown, f"{what}: transport: {type(exc).__name__}: {exc}")
            ) from None
        try:
            reply = r.json()
        except ValueError:
            reply = None
        if r.status_code == 200 and isinstance(reply, dict) and "error" not in reply:
            return reply
        code, message = _error_of(reply, r.text)
        definite = code in DEFINITE_CODES or any(m in message for m in DEFINITE_MESSAGES)
        outcome = Outcome.ERROR if definite or not writes else Outcome.TIMEOUT
        named = f" ({DEFINITE_CODES[code]})" if code in DEFINITE_CODES else ""
        raise _Failed(
            Response(outcome, f"{what}: HTTP {r.status_code}: {message} (code {code}{named})")
        )

    async def aclose(self) -> None:
        await self._http.aclose()


def _short(value: str | None, limit: int = 24) -> str:
    """A value for a message: as given, or its start and length when long."""
    if value is None or len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} chars)"


def _value_of(reply: Mapping[str, object]) -> str | None:
    """The value of the first key of a range reply (None: no key); the gateway leaves out
    empty fields, so a key with an empty value has no ``value``."""
    kvs = reply.get("kvs")
    if not kvs:
        return None
    if not isinstance(kvs, list) or not isinstance(kvs[0], dict):
        raise ValueError(f"a range reply with malformed kvs: {str(reply)[:200]}")
    raw = kvs[0].get("value", "")
    try:
        return unb64(str(raw))
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"a range reply with an undecodable value {raw!r}: {exc}") from exc


def _error_of(reply: object, text: str) -> tuple[int | None, str]:
    """The gRPC code and message of the gateway's error reply (``{"error", "code",
    "message"}``), or None and the raw text."""
    if isinstance(reply, dict):
        code = reply.get("code")
        message = reply.get("error") or reply.get("message") or text
        return (code if isinstance(code, int) else None), str(message)[:200]
    return None, text.strip()[:200]
