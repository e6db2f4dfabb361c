"""Record and replay of Messages API responses, so a run with a key can be replayed without one.

A :class:`Cassette` is one JSON file of recorded responses keyed by a hash of the
request: sha256 over the canonical JSON of the request's model, system, messages,
tools and tool_choice (never headers, so never a key). In ``record`` mode each
successful response is stored as the raw JSON the API sent; in ``replay`` mode the
stored response is served and the network is never touched.

It works at the transport level: :meth:`Cassette.transport` wraps an ``httpx2``
transport and is handed to the SDK as its ``http_client``. So a replayed response
goes through the same SDK parsing (content blocks, usage) as a live one, and only
the final answer of the SDK's retries is recorded, never a 529 on the way.

``httpx2`` (which comes with ``anthropic``) is imported only when a transport is built,
so this module loads without the optional extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import httpx2

Mode = Literal["record", "replay"]
MODES: tuple[Mode, ...] = ("record", "replay")
KEY_FIELDS = ("model", "system", "messages", "tools", "tool_choice")
"""The parts of a request that decide its answer; the hash covers these only."""
MESSAGES_PATH = "/v1/messages"
FORMAT = 1


class CassetteMiss(LookupError):
    """Replay found no recorded response for a request."""


def request_key(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the request fields that decide the answer."""
    canonical = json.dumps(
        {k: body.get(k) for k in KEY_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class Cassette:
    """Recorded responses in one JSON file, keyed by :func:`request_key`."""

    __slots__ = ("_entries", "mode", "path")

    def __init__(self, path: Path, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"cassette mode {mode!r} is not one of: {', '.join(MODES)}")
        self.path = Path(path)
        self.mode: Mode = mode
        self._entries: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            entries = data["entries"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cassette {self.path} is not a cassette file: {e}") from e
        if not isinstance(entries, dict):
            raise ValueError(f"cassette {self.path} is not a cassette file: entries is no object")
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def response(self, key: str) -> dict[str, Any]:
        """The recorded response JSON for ``key``; :class:`CassetteMiss` naming both if none."""
        entry = self._entries.get(key)
        if entry is None:
            state = "" if self.path.exists() else " (the file does not exist)"
            raise CassetteMiss(
                f"no recorded response for request key {key} in cassette {self.path}{state}: "
                "record it first with a key (mode 'record'), or the request changed "
                "(model, prompt, tools) since it was recorded"
            )
        response: dict[str, Any] = entry["response"]
        return response

    def record(self, key: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Store ``response`` under ``key`` and write the file at once (atomically)."""
        if self.mode != "record":
            raise RuntimeError(f"cassette {self.path} is in mode {self.mode!r}, not 'record'")
        self._entries[key] = {
            "request": {k: request.get(k) for k in KEY_FIELDS},
            "response": dict(response),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": FORMAT, "entries": self._entries}, indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def transport(
        self, inner: httpx2.AsyncBaseTransport | None = None
    ) -> httpx2.AsyncBaseTransport:
        """An ``httpx2`` transport for the SDK's ``http_client``.

        record: forwards to ``inner`` (required) and stores every 2xx Messages answer.
        replay: answers from the file; ``inner`` is never used, nothing leaves the machine.
        """
        import httpx2

        cassette = self
        if self.mode == "record" and inner is None:
            raise ValueError(f"cassette {self.path} records: it needs an inner transport")

        class _CassetteTransport(httpx2.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                if request.method != "POST" or request.url.path != MESSAGES_PATH:
                    return _error(request, 404, f"the cassette serves only POST {MESSAGES_PATH}")
                body = json.loads(await request.aread())
                key = request_key(body)
                if cassette.mode == "replay":
                    try:
                        payload = cassette.response(key)
                    except CassetteMiss as e:
                        return _error(request, 404, str(e))
                    return httpx2.Response(200, json=payload, request=request)
                assert inner is not None
                response = await inner.handle_async_request(request)
                if not response.is_success:
                    return response
                content = await response.aread()
                cassette.record(key, body, json.loads(content))
                headers = [
                    (k, v)
                    for k, v in response.headers.items()
                    if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
                ]
                return httpx2.Response(
                    response.status_code, headers=headers, content=content, request=request
                )

            async def aclose(self) -> None:
                if inner is not None:
                    await inner.aclose()

        return _CassetteTransport()


def _error(request: httpx2.Request, status: int, message: str) -> httpx2.Response:
    """An API-shaped error the SDK raises as a status error and does not retry."""
    import httpx2

    return httpx2.Response(
        status,
        headers={"x-should-retry": "false"},
        json={"type": "error", "error": {"type": "not_found_error", "message": message}},
        request=request,
    )
